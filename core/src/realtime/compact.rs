//! The socket.io handshake request, copied out of hyper's read buffer.
//!
//! hyper parses a request's URI and header values as slices of its connection's read buffer
//! (8 KiB at least), and socketioxide keeps the parts of the request that opened a session for
//! the whole life of the socket (`Socket::req_parts`). Those slices kept the whole read buffer
//! of every socket's HTTP connection alive, long after hyper handed the connection over to the
//! websocket. [`CompactHandshakeLayer`] (added by [`App::into_router`](crate::App::into_router)
//! in front of the socket.io layer) copies the URI and the header values of a request that opens
//! a session into one allocation of their own size before socketioxide sees the request.

use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Uri};
use tower::{Layer, Service};

/// The path socketioxide serves (its default, which Plume does not change).
pub(crate) const SOCKETIO_PATH: &str = "/socket.io";

/// Whether a request opens a new engine.io session: a request on the socket.io path without
/// a `sid` (a session's later requests and its upgrade to a websocket carry its `sid`, and
/// socketioxide does not keep their parts).
pub(crate) fn opens_session(uri: &Uri) -> bool {
    let path = uri.path();
    let on_socketio = path
        .strip_prefix(SOCKETIO_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    on_socketio
        && !uri
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("sid=")))
}

/// Copy the URI and every header value of `parts` into one buffer of their total size, so that
/// `parts` no longer shares the buffer the request was parsed from. Header names (static, or
/// copied by `http` when parsed), the method, the version and the extensions are kept as they
/// are. A value that does not survive the copy (it cannot happen: it was a valid value) is
/// kept as it was.
pub(crate) fn compact_parts(parts: &mut Parts) {
    let uri = parts.uri.to_string();
    let total = uri.len()
        + parts
            .headers
            .values()
            .map(|v| v.as_bytes().len())
            .sum::<usize>();
    let mut buf = BytesMut::with_capacity(total);
    buf.put_slice(uri.as_bytes());
    for value in parts.headers.values() {
        buf.put_slice(value.as_bytes());
    }
    let buf: Bytes = buf.freeze();

    if let Ok(compact) = Uri::from_maybe_shared(buf.slice(..uri.len())) {
        parts.uri = compact;
    }
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    let mut at = uri.len();
    for (name, value) in &parts.headers {
        let len = value.as_bytes().len();
        let copy = match HeaderValue::from_maybe_shared(buf.slice(at..at + len)) {
            Ok(mut copy) => {
                copy.set_sensitive(value.is_sensitive());
                copy
            }
            Err(_) => value.clone(),
        };
        at += len;
        headers.append(name.clone(), copy);
    }
    parts.headers = headers;
}

/// A tower layer that runs [`compact_parts`] on every request that opens a socket.io session.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CompactHandshakeLayer;

impl<S> Layer<S> for CompactHandshakeLayer {
    type Service = CompactHandshake<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CompactHandshake { inner }
    }
}

/// The service of [`CompactHandshakeLayer`].
#[derive(Debug, Clone)]
pub(crate) struct CompactHandshake<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for CompactHandshake<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !opens_session(req.uri()) {
            return self.inner.call(req);
        }
        let (mut parts, body) = req.into_parts();
        compact_parts(&mut parts);
        self.inner.call(Request::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request parsed the way hyper parses one: the URI and every header value are slices of
    /// one read buffer (here 8 KiB, hyper's first read buffer).
    fn parsed_like_hyper() -> (Parts, Bytes) {
        let head = "/socket.io/?EIO=4&transport=websocket\
                    host: 127.0.0.1:3030\
                    authorization: Bearer abc.def.ghi\
                    x-custom: one\
                    x-custom: two";
        let mut read_buffer = BytesMut::with_capacity(8192);
        read_buffer.put_slice(head.as_bytes());
        let read_buffer = read_buffer.freeze();
        let slice = |from: &str| {
            let at = head.find(from).unwrap_or_default();
            read_buffer.slice(at..at + from.len())
        };
        let mut parts = Request::new(()).into_parts().0;
        parts.uri = Uri::from_maybe_shared(slice("/socket.io/?EIO=4&transport=websocket"))
            .expect("a valid uri");
        let value = |v: &str| HeaderValue::from_maybe_shared(slice(v)).expect("a valid value");
        parts.headers.append("host", value("127.0.0.1:3030"));
        let mut auth = value("Bearer abc.def.ghi");
        auth.set_sensitive(true);
        parts.headers.append("authorization", auth);
        parts.headers.append("x-custom", value("one"));
        parts.headers.append("x-custom", value("two"));
        (parts, read_buffer)
    }

    fn within(buffer: &Bytes, bytes: &[u8]) -> bool {
        let range = buffer.as_ptr_range();
        range.contains(&bytes.as_ptr())
    }

    #[test]
    fn compacted_parts_no_longer_point_into_the_read_buffer() {
        let (mut parts, read_buffer) = parsed_like_hyper();
        assert!(within(&read_buffer, parts.uri.path().as_bytes()));
        assert!(
            parts
                .headers
                .values()
                .all(|v| within(&read_buffer, v.as_bytes()))
        );

        compact_parts(&mut parts);

        assert!(!within(&read_buffer, parts.uri.path().as_bytes()));
        assert!(
            parts
                .headers
                .values()
                .all(|v| !within(&read_buffer, v.as_bytes()))
        );
        // The read buffer is the last owner of its allocation again.
        assert!(read_buffer.is_unique());
    }

    #[test]
    fn compacted_parts_keep_every_value_in_order() {
        let (mut parts, _read_buffer) = parsed_like_hyper();
        let before = parts.clone();
        compact_parts(&mut parts);
        assert_eq!(parts.uri, before.uri);
        assert_eq!(parts.uri.query(), Some("EIO=4&transport=websocket"));
        assert_eq!(parts.headers, before.headers);
        let custom: Vec<_> = parts.headers.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["one", "two"]);
        let auth = parts.headers.get("authorization").expect("kept");
        assert!(auth.is_sensitive());
    }

    #[test]
    fn only_requests_that_open_a_session_are_compacted() {
        let opens = |uri: &str| opens_session(&uri.parse().expect("a valid uri"));
        assert!(opens("/socket.io/?EIO=4&transport=websocket"));
        assert!(opens("/socket.io/?EIO=4&transport=polling&t=abc"));
        assert!(opens("/socket.io"));
        assert!(!opens("/socket.io/?EIO=4&transport=websocket&sid=abc"));
        assert!(!opens("/socket.io/?sid=abc&EIO=4&transport=polling"));
        assert!(!opens("/socket.iox/?EIO=4"));
        assert!(!opens("/todos?sid=1"));
        assert!(!opens("/todos"));
    }
}
