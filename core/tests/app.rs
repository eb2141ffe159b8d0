//! App, hooks, events and ServiceHandle behaviour.

use std::sync::{Arc, Mutex};

use plume::hooks::{HookContext, Next, around, hook, hook_sync};
use plume::{
    App, Error, ErrorKind, Id, Method, Params, Provider, Result, Service, ServiceOptions,
    async_trait,
};
use serde_json::{Value, json};

/// A service that records calls and returns what it was given.
#[derive(Default)]
struct Echo {
    calls: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Service for Echo {
    async fn find(&self, params: Params) -> Result<Value> {
        self.calls.lock().unwrap().push("find".into());
        Ok(json!({ "query": params.query, "route": params.route }))
    }
    async fn get(&self, id: Id, _params: Params) -> Result<Value> {
        self.calls.lock().unwrap().push(format!("get {id}"));
        if id == Id::from("missing") {
            return Err(Error::no_record(&id));
        }
        Ok(json!({ "id": id }))
    }
    async fn create(&self, data: Value, _params: Params) -> Result<Value> {
        self.calls.lock().unwrap().push("create".into());
        Ok(data)
    }
    async fn call(&self, method: &str, data: Value, _params: Params) -> Result<Value> {
        match method {
            "shout" => Ok(json!({ "loud": data["text"].as_str().map(str::to_uppercase) })),
            _ => Err(Error::method_not_allowed(format!("no {method}"))),
        }
    }
    fn methods(&self) -> Vec<Method> {
        vec![
            Method::Find,
            Method::Get,
            Method::Create,
            Method::Custom("shout".into()),
        ]
    }
    fn events(&self) -> Vec<String> {
        vec!["shouted".into()]
    }
}

type Log = Arc<Mutex<Vec<String>>>;

fn logging(log: &Log, name: &'static str) -> impl plume::hooks::Hook {
    let log = log.clone();
    hook_sync(move |ctx: &mut HookContext| {
        log.lock()
            .unwrap()
            .push(format!("{name}:{:?}", ctx.hook_type));
        Ok(())
    })
}

fn logging_around(log: &Log, name: &'static str) -> impl plume::hooks::AroundHook {
    let log = log.clone();
    around(move |ctx: &mut HookContext, next: Next<'_>| {
        let log = log.clone();
        Box::pin(async move {
            log.lock().unwrap().push(format!("{name}:in"));
            let outcome = next.run(ctx).await;
            log.lock()
                .unwrap()
                .push(format!("{name}:out:{}", outcome.is_ok()));
            outcome
        })
    })
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test]
async fn hooks_run_in_the_documented_order_at_both_levels() {
    let app = App::new();
    let echo = Echo::default();
    let calls = echo.calls.clone();
    let svc = app.use_service("echo", echo);
    let log: Log = Arc::default();
    app.hooks()
        .around(logging_around(&log, "app-around"))
        .before(logging(&log, "app-before"))
        .after(logging(&log, "app-after"))
        .error(logging(&log, "app-error"));
    svc.hooks()
        .around(logging_around(&log, "svc-around"))
        .before(logging(&log, "svc-before"))
        .after(logging(&log, "svc-after"))
        .error(logging(&log, "svc-error"));

    svc.get(1, Params::new()).await.unwrap();
    assert_eq!(
        take(&log),
        [
            "app-around:in",
            "svc-around:in",
            "app-before:Before",
            "svc-before:Before",
            "svc-after:After",
            "app-after:After",
            "svc-around:out:true",
            "app-around:out:true",
        ]
    );
    assert_eq!(take(&calls), ["get 1"]);

    // A failing method runs the error hooks, service first, and no after hooks.
    let err = svc.get("missing", Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        take(&log),
        [
            "app-around:in",
            "svc-around:in",
            "app-before:Before",
            "svc-before:Before",
            "svc-error:Error",
            "app-error:Error",
            "svc-around:out:false",
            "app-around:out:false",
        ]
    );
}

#[tokio::test]
async fn method_filters_select_hooks() {
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    let log: Log = Arc::default();
    svc.hooks()
        .before_for([Method::Create], logging(&log, "create-only"));
    app.hooks()
        .after_for([Method::Find, Method::Get], logging(&log, "reads"));
    svc.get(1, Params::new()).await.unwrap();
    assert_eq!(take(&log), ["reads:After"]);
    svc.create(json!({}), Params::new()).await.unwrap();
    assert_eq!(take(&log), ["create-only:Before"]);
}

#[tokio::test]
async fn a_custom_method_filter_names_an_offered_method() {
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    let log: Log = Arc::default();
    // A custom method the service offers: the hook runs for it, and only for it.
    svc.hooks()
        .before_for(Method::from_name("shout"), logging(&log, "shout-only"));
    svc.call("shout", json!({"text": "hi"}), Params::new())
        .await
        .unwrap();
    assert_eq!(take(&log), ["shout-only:Before"]);
    svc.find(Params::new()).await.unwrap();
    assert!(take(&log).is_empty());

    // A typo of it is an error at registration, naming what the service offers.
    let typo = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        svc.hooks()
            .before_for([Method::Custom("shuot".into())], logging(&log, "never"));
    }))
    .expect_err("an unknown custom method is refused");
    let message = typo.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(
        message,
        "a hook for the custom method 'shuot', which this service does not offer \
         (it offers find, get, create, shout)"
    );
    svc.call("shout", json!({"text": "hi"}), Params::new())
        .await
        .unwrap();
    assert_eq!(
        take(&log),
        ["shout-only:Before"],
        "the refused hook was not added"
    );

    // The App's hooks apply to every service: a custom name there is not checked.
    app.hooks()
        .before_for(Method::from_name("shout"), logging(&log, "app-shout"));
    svc.call("shout", json!({"text": "hi"}), Params::new())
        .await
        .unwrap();
    assert_eq!(take(&log), ["app-shout:Before", "shout-only:Before"]);
}

#[tokio::test]
async fn a_before_hook_that_sets_a_result_skips_the_method() {
    let app = App::new();
    let echo = Echo::default();
    let calls = echo.calls.clone();
    let svc = app.use_service("echo", echo);
    let log: Log = Arc::default();
    svc.hooks()
        .before(hook_sync(|ctx| {
            ctx.result = Some(json!({"cached": true}));
            Ok(())
        }))
        .before(logging(&log, "later-before"))
        .after(logging(&log, "after"));
    let out = svc.get(7, Params::new()).await.unwrap();
    assert_eq!(out, json!({"cached": true}));
    assert!(take(&calls).is_empty(), "the method must not run");
    assert_eq!(take(&log), ["later-before:Before", "after:After"]);
}

#[tokio::test]
async fn a_failing_before_hook_stops_the_call_and_reaches_error_hooks() {
    let app = App::new();
    let echo = Echo::default();
    let calls = echo.calls.clone();
    let svc = app.use_service("echo", echo);
    let seen: Log = Arc::default();
    let seen2 = seen.clone();
    svc.hooks()
        .before(hook_sync(|_| Err(Error::forbidden("nope"))))
        .error(hook_sync(move |ctx| {
            seen2
                .lock()
                .unwrap()
                .push(ctx.error.as_ref().unwrap().message().to_owned());
            Ok(())
        }));
    let err = svc.get(1, Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    assert_eq!(take(&seen), ["nope"]);
    assert!(take(&calls).is_empty());
}

#[tokio::test]
async fn error_hooks_replace_or_recover() {
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    svc.hooks().error(hook_sync(|ctx| {
        let err = ctx.error.take().unwrap();
        ctx.error = Some(Error::unprocessable(format!("wrapped {}", err.code())));
        Ok(())
    }));
    let err = svc.get("missing", Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unprocessable);
    assert_eq!(err.message(), "wrapped 404");

    // An app-level error hook (runs after the service one) recovers with a result.
    app.hooks().error(hook_sync(|ctx| {
        ctx.error = None;
        ctx.result = Some(json!({"fallback": true}));
        Ok(())
    }));
    assert_eq!(
        svc.get("missing", Params::new()).await.unwrap(),
        json!({"fallback": true})
    );

    // An error hook that itself fails replaces the error.
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    svc.hooks()
        .error(hook_sync(|_| Err(Error::conflict("from the hook"))));
    let err = svc.get("missing", Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn around_hooks_can_recover_and_async_hooks_can_change_data() {
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    svc.hooks()
        .around(around(|ctx: &mut HookContext, next: Next<'_>| {
            Box::pin(async move {
                if next.run(ctx).await.is_err() {
                    ctx.result = Some(json!("recovered"));
                }
                Ok(())
            })
        }));
    svc.hooks().before_for(
        [Method::Create],
        hook(|ctx: &mut HookContext| {
            Box::pin(async move {
                tokio::task::yield_now().await;
                if let Some(Value::Object(data)) = &mut ctx.data {
                    data.insert("stamped".into(), true.into());
                }
                Ok(())
            })
        }),
    );
    assert_eq!(
        svc.get("missing", Params::new()).await.unwrap(),
        json!("recovered")
    );
    assert_eq!(
        svc.create(json!({"a": 1}), Params::new()).await.unwrap(),
        json!({"a": 1, "stamped": true})
    );
}

#[tokio::test]
async fn events_after_mutations_one_per_record_and_hooks_can_stop_them() {
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    let seen: Log = Arc::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    svc.on("created", move |ev| {
        s1.lock().unwrap().push(format!("svc {}", ev.data))
    });
    app.on_event(move |ev| {
        let method = ev
            .context
            .as_ref()
            .map(|c| c.method.to_string())
            .unwrap_or_default();
        s2.lock()
            .unwrap()
            .push(format!("app {} {} {} {method}", ev.path, ev.event, ev.data));
    });

    svc.create(json!([{"n": 1}, {"n": 2}]), Params::new())
        .await
        .unwrap();
    assert_eq!(
        take(&seen),
        [
            "svc {\"n\":1}",
            "app echo created {\"n\":1} create",
            "svc {\"n\":2}",
            "app echo created {\"n\":2} create"
        ]
    );

    // Reads emit nothing; failures emit nothing.
    svc.find(Params::new()).await.unwrap();
    let missing = svc.get("missing", Params::new()).await;
    assert_eq!(
        missing.expect_err("no such record").kind(),
        ErrorKind::NotFound
    );
    assert!(take(&seen).is_empty());

    // A hook can stop the event.
    svc.hooks().after(hook_sync(|ctx| {
        ctx.event = None;
        Ok(())
    }));
    svc.create(json!({"n": 3}), Params::new()).await.unwrap();
    assert!(take(&seen).is_empty());

    // Custom events go to listeners too.
    svc.emit("shouted", json!({"x": 1}));
    assert_eq!(take(&seen), ["app echo shouted {\"x\":1} "]);
}

#[tokio::test]
async fn a_remote_service_emits_no_call_event_unless_a_hook_asks() {
    let app = App::new();
    let options = ServiceOptions {
        remote: true,
        ..ServiceOptions::default()
    };
    let svc = app.use_service_with("proxy", Echo::default(), options);
    let seen: Log = Arc::default();
    let s = seen.clone();
    app.on_event(move |ev| s.lock().unwrap().push(format!("{} {}", ev.event, ev.data)));
    svc.create(json!({"n": 1}), Params::new()).await.unwrap();
    assert!(
        take(&seen).is_empty(),
        "a proxy's events come from the relay"
    );
    svc.hooks().before(hook_sync(|ctx| {
        ctx.event = Some("created".into());
        Ok(())
    }));
    svc.create(json!({"n": 2}), Params::new()).await.unwrap();
    assert_eq!(take(&seen), ["created {\"n\":2}"]);
}

#[tokio::test]
async fn custom_methods_and_method_not_allowed() {
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    assert_eq!(
        svc.call("shout", json!({"text": "hi"}), Params::new())
            .await
            .unwrap(),
        json!({"loud": "HI"})
    );
    let err = svc
        .call("whisper", json!({}), Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    assert_eq!(
        err.message(),
        "Method 'whisper' not allowed on service 'echo'"
    );
    let err = svc
        .remove(Some(Id::from(1)), Params::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        "Method 'remove' not allowed on service 'echo'"
    );

    // Options restrict what clients may call, not internal calls.
    let users = app.use_service_with(
        "users",
        Echo::default(),
        ServiceOptions::new().methods([Method::Find]),
    );
    assert!(users.get(1, Params::new()).await.is_ok());
    let external = Params::new().with_provider(Provider::Rest);
    let err = users.get(1, external).await.unwrap_err();
    assert_eq!(err.message(), "Method 'get' not allowed on service 'users'");
}

#[tokio::test]
async fn paths_are_normalized_and_placeholders_fill_the_route() {
    let app = App::new();
    app.use_service("/users/", Echo::default());
    app.use_service("users/:userId/messages", Echo::default());
    assert_eq!(app.services(), ["users", "users/:userId/messages"]);
    assert!(app.service("//users").is_some());

    let hit = app.lookup("/users/5/messages/7").unwrap();
    assert_eq!(hit.handle.path(), "users/:userId/messages");
    assert_eq!(hit.route["userId"], "5");
    assert_eq!(hit.id.as_deref(), Some("7"));

    let hit = app.lookup("users/5").unwrap();
    assert_eq!(hit.handle.path(), "users");
    assert_eq!(hit.id.as_deref(), Some("5"));

    assert!(app.lookup("nothing/here").is_none());
    assert!(app.lookup("users/5/messages/7/extra").is_none());
    let err = app.require("ghosts").unwrap_err();
    assert_eq!(err.message(), "Service 'ghosts' not found");
}

#[tokio::test]
async fn lifecycle_listeners_plugins_settings_and_shutdown() {
    let app = App::new();
    let log: Log = Arc::default();
    let (a, r) = (log.clone(), log.clone());
    app.on_service_added(move |h| a.lock().unwrap().push(format!("added {}", h.path())));
    app.on_service_removed(move |h| r.lock().unwrap().push(format!("removed {}", h.path())));
    app.configure(|app: &App| {
        app.set("answer", 42);
        app.use_service("plugged", Echo::default());
    });
    assert_eq!(app.get("answer"), Some(json!(42)));
    assert!(app.unuse("plugged").is_some());
    assert!(app.unuse("plugged").is_none());
    assert_eq!(take(&log), ["added plugged", "removed plugged"]);

    #[derive(Debug, PartialEq)]
    struct Marker(u8);
    app.insert_extension(Marker(3));
    assert_eq!(app.extension::<Marker>().as_deref(), Some(&Marker(3)));

    let l = log.clone();
    app.on_shutdown(move || {
        Box::pin(async move {
            l.lock().unwrap().push("closed".into());
        })
    });
    app.shutdown().await;
    app.shutdown().await;
    assert_eq!(take(&log), ["closed"]);
}

#[tokio::test]
async fn typed_calls() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Note {
        text: String,
    }
    let app = App::new();
    let svc = app.use_service("echo", Echo::default());
    let note: Note = svc
        .create_as(&Note { text: "hi".into() }, Params::new())
        .await
        .unwrap();
    assert_eq!(note, Note { text: "hi".into() });
    let got: Value = svc.get_as(3, Params::new()).await.unwrap();
    assert_eq!(got, json!({"id": 3}));
    let err = svc.get_as::<Note>(3, Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::GeneralError);
}

/// The route table follows every mount and unmount (matchit radix trees, updated in place).
#[tokio::test]
async fn routes_follow_mounts_and_unmounts_and_keep_their_precedence() {
    let app = App::new();
    let path_of = |p: &str| app.lookup(p).map(|hit| hit.handle.path().to_owned());
    assert_eq!(path_of("users"), None);

    // A late mount is routable at once, nested paths included.
    app.use_service("users", Echo::default());
    app.use_service("users/:userId/messages", Echo::default());
    assert_eq!(path_of("users").as_deref(), Some("users"));
    assert_eq!(path_of("users/5").as_deref(), Some("users"));
    let hit = app.lookup("users/5/messages/a%2Fb").unwrap();
    assert_eq!(hit.handle.path(), "users/:userId/messages");
    assert_eq!(hit.route["userId"], "5");
    // An encoded slash stays in its segment, still encoded (the REST layer decodes it).
    assert_eq!(hit.id.as_deref(), Some("a%2Fb"));
    assert_eq!(
        path_of("//users//5/messages/").as_deref(),
        Some("users/:userId/messages")
    );

    // The longest service path wins; then a literal beats a placeholder.
    app.use_service("x/b", Echo::default());
    app.use_service("x/:a/y", Echo::default());
    let hit = app.lookup("x/b/y").unwrap();
    assert_eq!(hit.handle.path(), "x/:a/y");
    assert_eq!(hit.id, None);
    let hit = app.lookup("x/b/z").unwrap();
    assert_eq!((hit.handle.path(), hit.id.as_deref()), ("x/b", Some("z")));
    app.use_service("x/:a", Echo::default());
    assert_eq!(path_of("x/b").as_deref(), Some("x/b"));
    assert_eq!(path_of("x/c").as_deref(), Some("x/:a"));

    // Paths that differ only in placeholder names: the first in path order answers, the other
    // takes over when it goes.
    app.use_service("users/:a/tags", Echo::default());
    app.use_service("users/:b/tags", Echo::default());
    assert_eq!(path_of("users/1/tags").as_deref(), Some("users/:a/tags"));
    assert_eq!(app.lookup("users/1/tags").unwrap().route["a"], "1");
    assert!(app.unuse("users/:a/tags").is_some());
    assert_eq!(path_of("users/1/tags").as_deref(), Some("users/:b/tags"));
    assert_eq!(app.lookup("users/1/tags").unwrap().route["b"], "1");

    // Unmounting removes exactly its routes; replacing keeps the path routable.
    assert!(app.unuse("users").is_some());
    assert_eq!(path_of("users/5"), None);
    assert_eq!(
        path_of("users/5/messages").as_deref(),
        Some("users/:userId/messages")
    );
    app.use_service("users/:userId/messages", Echo::default());
    assert_eq!(
        path_of("users/5/messages/1").as_deref(),
        Some("users/:userId/messages")
    );

    // The root service, and literal braces in a path.
    app.use_service("/", Echo::default());
    assert_eq!(path_of("/").as_deref(), Some(""));
    assert_eq!(app.lookup("7").unwrap().id.as_deref(), Some("7"));
    app.use_service("odd{name}", Echo::default());
    assert_eq!(path_of("odd{name}/1").as_deref(), Some("odd{name}"));
    assert_eq!(path_of("oddx/1/2"), None);
}

/// Every method of a handle that takes an id takes any id; `patch` and `remove` also take
/// `None`, Feathers' null id, for every record matching the query.
#[tokio::test]
async fn handle_methods_take_ids_one_way_and_none_for_many() {
    let app = App::new();
    let store: plume::MemoryService = plume::MemoryService::with_options(
        plume::MemoryOptions::new().multi(plume::memory::Multi::All),
    );
    let todos = app.use_service("todos", store);
    todos
        .create(
            json!([{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}]),
            Params::new(),
        )
        .await
        .unwrap();
    let id = Id::Int(1);
    assert_eq!(todos.get(0, Params::new()).await.unwrap()["n"], 0);
    assert_eq!(todos.get(&id, Params::new()).await.unwrap()["n"], 1);
    assert_eq!(
        todos
            .patch(0, json!({"x": 1}), Params::new())
            .await
            .unwrap(),
        json!({"id": 0, "n": 0, "x": 1})
    );
    assert_eq!(
        todos
            .patch(&id, json!({"x": 2}), Params::new())
            .await
            .unwrap()["x"],
        2
    );
    assert_eq!(todos.remove("0", Params::new()).await.unwrap()["id"], 0);
    let odd = || Params::new().with_query(json!({"n": {"$in": [1, 3]}}));
    let patched = todos
        .patch(None, json!({"odd": true}), odd())
        .await
        .unwrap();
    assert_eq!(patched.as_array().map(Vec::len), Some(2));
    let removed = todos.remove(None, odd()).await.unwrap();
    assert_eq!(removed.as_array().map(Vec::len), Some(2));
    assert_eq!(
        todos.find(Params::new()).await.unwrap(),
        json!([{"id": 2, "n": 2}])
    );
}
