//! The Plume gateway demo.
//!
//! For now this runs a small in-process example that prints what it does: a todos service written
//! with `#[service]`, a hook, an event listener and a few calls through the hook chain.

// A command-line program whose job is to print what it does.
#![allow(clippy::print_stdout)]

mod todos;

use plume::hooks::hook_sync;
use plume::{App, Params};
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let app = App::new();
    let todos = app.use_service("todos", todos::Todos::new("todos-a")?);
    println!("mounted services: {:?}", app.services());

    todos.hooks().before_for(
        &["create"],
        hook_sync(|ctx| {
            println!(
                "  before hook: {} {} with {}",
                ctx.method,
                ctx.path,
                json!(ctx.data)
            );
            Ok(())
        }),
    );
    todos.on("created", |ev| {
        println!("  event: {} {} {}", ev.path, ev.event, ev.data)
    });

    println!("create:");
    let created = todos
        .create(json!({"text": "try Plume"}), Params::new())
        .await?;
    println!("  -> {created}");

    println!("find (done=false, sorted by id descending):");
    let page = todos
        .find(Params::new().with_query(json!({"done": "false", "$sort": {"id": "-1"}})))
        .await?;
    println!("  -> {page}");

    println!("get 99:");
    match todos.get(99, Params::new()).await {
        Ok(todo) => println!("  -> {todo}"),
        Err(err) => println!("  -> {} {}", err.code(), err.to_json()),
    }
    Ok(())
}
