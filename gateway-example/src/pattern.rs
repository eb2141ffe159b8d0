//! Hemera-style pattern RPC for a person trying it (`docs/hemera.md`):
//!
//! ```text
//! gateway-example math [--nats URL] [--env ENV]          # serves {topic:'math', cmd:add|sub|mul|div}
//! gateway-example act  [--nats URL] [--env ENV] '{"topic":"math","cmd":"add","a":1,"b":2}'
//! ```
//!
//! With `--nats` both speak Hemera's NATS wire (a Node `nats-hemera` service or caller on the
//! same server takes part); without it they use the loopback mesh of environment `--env`.

use std::time::Duration;

use clap::Args;
use plume_pattern::{Hemera, HemeraError, Options, Req, typed};
use plume_transport::Mesh;
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the pattern commands connect.
#[derive(Debug, Args)]
pub(crate) struct BusArgs {
    /// A NATS server (`nats://127.0.0.1:4222`): Hemera's wire. Without it: the loopback mesh.
    #[arg(long, env = "PLUME_HEMERA_NATS")]
    nats: Option<String>,
    /// The mesh environment (without --nats): nodes of other environments are not seen.
    #[arg(long, env = "PLUME_ENV", default_value = "hemera-demo")]
    env: String,
}

/// `act`: one message.
#[derive(Debug, Args)]
pub(crate) struct ActArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// The deadline of the act in milliseconds when the message has no `timeout$`.
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
    /// The message, a JSON object: `{"topic":"math","cmd":"add","a":1,"b":2}`.
    message: String,
}

/// `math`: the calculator service.
#[derive(Debug, Args)]
pub(crate) struct MathArgs {
    #[command(flatten)]
    bus: BusArgs,
}

/// A node on the chosen bus (and the mesh node to shut down, without NATS).
async fn connect(
    bus: &BusArgs,
    key: &str,
    timeout: Duration,
) -> Result<(Hemera, Option<Mesh>), HemeraError> {
    let options = Options {
        name: format!("gateway-example-{key}"),
        timeout,
        ..Options::default()
    };
    match &bus.nats {
        Some(url) => Ok((Hemera::connect(url, options).await?, None)),
        None => {
            let mesh = Mesh::builder()
                .environment(bus.env.clone())
                .key(key)
                .start()
                .await
                .map_err(|e| HemeraError::hemera(format!("cannot join the mesh: {e}")))?;
            Ok((Hemera::mesh(mesh.clone(), options), Some(mesh)))
        }
    }
}

#[derive(Debug, Deserialize)]
struct Operands {
    a: f64,
    b: f64,
}

/// A number as JSON: whole numbers as integers (`3`, not `3.0`), as JavaScript prints them.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Serve `{topic:'math', cmd:'add'|'sub'|'mul'|'div'}` until SIGTERM or Ctrl-C.
pub(crate) async fn math(args: MathArgs) -> anyhow::Result<()> {
    let (node, mesh) = connect(&args.bus, "math", Duration::from_secs(2)).await?;
    let ops: [(&str, fn(f64, f64) -> Result<f64, HemeraError>); 4] = [
        ("add", |a, b| Ok(a + b)),
        ("sub", |a, b| Ok(a - b)),
        ("mul", |a, b| Ok(a * b)),
        ("div", |a, b| {
            if b == 0.0 {
                Err(HemeraError::new("Error", "Division by zero").with_code("E_DIV_ZERO"))
            } else {
                Ok(a / b)
            }
        }),
    ];
    for (cmd, op) in ops {
        node.add(
            json!({"topic": "math", "cmd": cmd}),
            typed(move |p: Operands, _req: Req| async move { op(p.a, p.b).map(number) }),
        )
        .await?;
    }
    crate::say("math ready");
    crate::stop_signal(false).await;
    node.close().await;
    if let Some(mesh) = mesh {
        mesh.shutdown().await;
    }
    Ok(())
}

/// Act once: the result as JSON on stdout (exit 0), or the error object on stderr (exit 1).
pub(crate) async fn act(args: ActArgs) -> anyhow::Result<()> {
    let outcome = run_act(&args).await;
    match outcome {
        Ok(value) => {
            crate::say(&value.to_string());
            Ok(())
        }
        Err(e) => {
            let object = serde_json::to_value(&e).unwrap_or_else(|_| json!({"name": e.name}));
            eprintln!("{object}");
            std::process::exit(1);
        }
    }
}

async fn run_act(args: &ActArgs) -> Result<Value, HemeraError> {
    let message: Value = serde_json::from_str(&args.message)
        .map_err(|e| HemeraError::hemera(format!("the message is not JSON: {e}")))?;
    let (node, mesh) = connect(&args.bus, "act", Duration::from_millis(args.timeout)).await?;
    let outcome = node.act(message).await;
    node.close().await;
    if let Some(mesh) = mesh {
        mesh.shutdown().await;
    }
    outcome
}
