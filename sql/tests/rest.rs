//! Bad input over real HTTP: a `SqlService` mounted on an App served on loopback answers clear
//! Feathers errors (never SQL text), and `503` once its database is gone.

mod common;

use plume::App;
use plume::memory::Multi;
use plume_sql::Database;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request; the status and the JSON body.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    body: &str,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("an answer within 30 s")
    .expect("read");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_input_over_rest_gets_feathers_errors() {
    let db = Database::connect("sqlite::memory:").await.expect("connect");
    let people = common::people(&db, "people", Multi::None).await;
    let app = App::new();
    app.use_service("people", people);
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();

    let (status, created) = request(addr, "POST", "/people", r#"{"name":"Ann","age":31}"#).await;
    assert_eq!(status, 201, "{created}");
    let (status, page) = request(addr, "GET", "/people?age[$gt]=30&name[$like]=A%25", "").await;
    assert_eq!((status, page[0]["name"].as_str()), (200, Some("Ann")));

    for (target, field) in [
        ("/people?nope=1", "nope"),
        ("/people?age[$gt]=old", "age"),
        ("/people?$select[0]=nope", "nope"),
        ("/people?$sort[nope]=1", "nope"),
        ("/people?age[$like]=1", "age"),
        ("/people?created=maybe", "created"),
    ] {
        let (status, error) = request(addr, "GET", target, "").await;
        assert_eq!(status, 400, "{target}: {error}");
        assert_eq!(error["name"], "BadRequest");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{target}: {message}");
        assert!(!message.contains("SELECT"), "{message}");
    }
    let (status, error) = request(addr, "POST", "/people", r#"{"name":"B","shoe":42}"#).await;
    assert_eq!(
        (status, error["data"]["field"].as_str()),
        (400, Some("shoe"))
    );
    let (status, error) = request(addr, "GET", "/people/abc", "").await;
    assert_eq!((status, error["name"].as_str()), (404, Some("NotFound")));
    let (status, _) = request(addr, "POST", "/people", r#"{"name":"C","email":"c@x"}"#).await;
    assert_eq!(status, 201);
    let (status, error) = request(addr, "POST", "/people", r#"{"name":"D","email":"c@x"}"#).await;
    assert_eq!((status, error["name"].as_str()), (409, Some("Conflict")));

    db.close().await;
    let (status, error) = request(addr, "GET", "/people", "").await;
    assert_eq!((status, error["name"].as_str()), (503, Some("Unavailable")));
    server.shutdown().await;
}
