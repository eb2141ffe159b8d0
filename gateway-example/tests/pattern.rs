//! `gateway-example math` and `gateway-example act` as processes: over a real `nats-server` (and
//! with a real Node Hemera caller), and over the loopback mesh.

#[allow(unreachable_pub, dead_code)]
#[path = "../../tests/src/servers.rs"]
mod servers;

#[path = "../../core/tests/support/npm.rs"]
mod npm;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use servers::{Kind, Server};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-example");
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `gateway-example math ARGS`, killed by PID when dropped.
struct Math(Child);

impl Math {
    fn start(args: &[&str], env: &str) -> Math {
        let mut child = Command::new(BIN)
            .arg("math")
            .args(args)
            .env("PLUME_ENV", env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gateway-example math starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let math = Math(child);
        let line = rx.recv_timeout(READY_WITHIN).expect("math prints a line");
        assert_eq!(line, "math ready");
        math
    }
}

impl Drop for Math {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn act(args: &[&str], env: &str, message: &str) -> Output {
    Command::new(BIN)
        .arg("act")
        .args(args)
        .arg(message)
        .env("PLUME_ENV", env)
        .stdin(Stdio::null())
        .output()
        .expect("gateway-example act runs")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "act failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn stderr_json(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(1), "act should exit 1");
    assert!(out.stdout.is_empty(), "nothing on stdout on error");
    let text = String::from_utf8_lossy(&out.stderr);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {text}"))
}

/// The four operations, division by zero and bad input, with `args` naming the bus.
fn check_math(args: &[&str], env: &str) {
    let m = |cmd: &str, a: f64, b: f64| {
        json!({"topic": "math", "cmd": cmd, "a": a, "b": b}).to_string()
    };
    assert_eq!(stdout_json(&act(args, env, &m("add", 1.0, 2.0))), json!(3));
    assert_eq!(
        stdout_json(&act(args, env, &m("sub", 1.0, 2.5))),
        json!(-1.5)
    );
    assert_eq!(stdout_json(&act(args, env, &m("mul", 3.0, 4.0))), json!(12));
    assert_eq!(
        stdout_json(&act(args, env, &m("div", 1.0, 4.0))),
        json!(0.25)
    );
    let e = stderr_json(&act(args, env, &m("div", 1.0, 0.0)));
    assert_eq!(e["message"], "Division by zero", "{e}");
    assert_eq!(e["code"], "E_DIV_ZERO");
    let e = stderr_json(&act(
        args,
        env,
        r#"{"topic":"math","cmd":"pow","a":1,"b":2}"#,
    ));
    assert_eq!(e["name"], "PatternNotFound", "{e}");
    let e = stderr_json(&act(
        args,
        env,
        r#"{"topic":"math","cmd":"add","a":"x","b":2}"#,
    ));
    assert_eq!(e["name"], "PayloadValidationError", "{e}");
    let e = stderr_json(&act(args, env, "not json"));
    assert_eq!(e["name"], "HemeraError", "{e}");
    let e = stderr_json(&act(args, env, r#"{"topic":"math","timeout$":"soon"}"#));
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("timeout$")),
        "{e}"
    );
}

#[test]
fn math_and_act_over_nats_with_a_node_hemera_caller() {
    let server = Server::start(Kind::Nats);
    let url = server.url();
    let args = ["--nats", url.as_str()];
    let _math = Math::start(&args, "unused");
    check_math(&args, "unused");

    // A Node Hemera 7 caller reaches the same service.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hemera");
    let dir = npm::install_locked(&src, "hemera");
    let script = r#"
const Hemera = require('nats-hemera')
const nats = require('nats').connect({ url: process.argv[1] })
const hemera = new Hemera(nats, { logLevel: 'silent' })
hemera.ready(async () => {
  const out = {}
  out.mul = (await hemera.act({ topic: 'math', cmd: 'mul', a: 6, b: 7 })).data
  try { await hemera.act({ topic: 'math', cmd: 'div', a: 1, b: 0 }) } catch (e) { out.div = { name: e.name, message: e.message, code: e.code } }
  console.log(JSON.stringify(out))
  hemera.close(() => process.exit(0))
})"#;
    let out = Command::new("node")
        .args(["-e", script, &url])
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        got,
        json!({"mul": 42, "div": {"name": "Error", "message": "Division by zero", "code": "E_DIV_ZERO"}})
    );
}

#[test]
fn math_and_act_on_the_loopback_mesh() {
    let env = format!("pattern-example-{}", std::process::id());
    let _math = Math::start(&[], &env);
    check_math(&[], &env);
}
