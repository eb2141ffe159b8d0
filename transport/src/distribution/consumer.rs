//! Consuming: the state machine that turns table events, withdrawal notices and grace timers
//! into [`Action`]s (mount a proxy, unmount one, start a grace period, tell waiters the state
//! changed). The functions here take the [`State`] and the [`Rules`] and return what to do;
//! [`mount`](super::mount) carries the actions out after the lock is released. They start no
//! task and touch no `App`, so they are unit-tested without either (`tests` below).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::Ordering;

use serde_json::Value;
use tokio::sync::mpsc;

use super::Distribution;
use super::runtime::{Action, LOG, MAX_SERVICES_PER_PEER, MAX_WITHDRAWN, Remote, Shared, State};
use super::wire::{DESCRIPTOR_VERSION, ServiceDescriptor, Withdrawn, endpoint, path_of};
use crate::discovery::NodeId;
use crate::mesh::TableEvent;
use crate::sync::lock;

/// What the consumer decides by, besides its state.
pub(super) struct Rules<'a> {
    /// This node (its own endpoints are not consumed).
    pub(super) node: NodeId,
    /// The plugin's options (filters, renames).
    pub(super) opts: &'a Distribution,
}

impl Rules<'_> {
    /// The local path of a remote service.
    pub(super) fn local_path(&self, d: &ServiceDescriptor) -> String {
        match &self.opts.remote_service_path {
            Some(rename) => plume::normalize_path(&rename(d)),
            None => d.path.clone(),
        }
    }
}

/// A provider of endpoint `name` appeared (or re-described it).
pub(super) fn provider_added(
    st: &mut State,
    rules: &Rules<'_>,
    name: &str,
    node: NodeId,
    key: String,
    descriptor: &Value,
) -> Action {
    if node == rules.node {
        return Action::None;
    }
    let Some(remote_path) = path_of(name) else {
        return Action::None;
    };
    let Some(d) = ServiceDescriptor::parse(descriptor) else {
        return Action::None;
    };
    if d.path != remote_path {
        tracing::warn!(target: LOG, %name, "descriptor path does not match its endpoint; ignored");
        return Action::None;
    }
    let names = &mut st
        .nodes
        .entry(node)
        .or_insert_with(|| (key.clone(), HashSet::new()))
        .1;
    if names.len() >= MAX_SERVICES_PER_PEER && !names.contains(name) {
        tracing::warn!(target: LOG, peer = %node, path = %remote_path, max = MAX_SERVICES_PER_PEER, "the peer publishes too many services; this one is not mounted");
        return Action::None;
    }
    names.insert(name.to_owned());
    st.withdrawn.remove(&(node, remote_path.to_owned()));
    if !rules.opts.remote_services.matches(&d) {
        return Action::None;
    }
    let local = rules.local_path(&d);
    if let Some(other) = st.local_of.get(remote_path)
        && *other != local
    {
        tracing::warn!(target: LOG, %remote_path, "renamed to two local paths; keeping the first");
        return Action::None;
    }
    if st
        .remotes
        .get(&local)
        .is_some_and(|r| r.remote_path != remote_path)
    {
        tracing::warn!(target: LOG, %local, %remote_path, "two remote paths map to one local path; keeping the first");
        return Action::None;
    }
    st.local_of.insert(remote_path.to_owned(), local.clone());
    let r = st.remotes.entry(local.clone()).or_insert_with(|| Remote {
        remote_path: remote_path.to_owned(),
        providers: BTreeMap::new(),
        last_keys: BTreeSet::new(),
        mounted: None,
        grace_epoch: 0,
    });
    r.providers.insert(node, (key, d));
    r.last_keys = r.providers.values().map(|(k, _)| k.clone()).collect();
    r.grace_epoch += 1;
    let merged = merge(r.remote_path.clone(), &r.providers);
    match &mut r.mounted {
        Some(m) if m.signature == signature(&merged) => {
            // Back within the grace period: the proxy answers again.
            if let Some(t) = m.grace_task.take() {
                t.abort();
            }
            m.state.available.store(true, Ordering::Release);
            Action::Changed
        }
        _ => Action::Mount {
            local,
            descriptor: merged,
        },
    }
}

/// A provider of endpoint `name` left the table (`notice`: it announced a withdrawal).
pub(super) fn provider_removed(
    st: &mut State,
    rules: &Rules<'_>,
    name: &str,
    node: NodeId,
    notice: bool,
) -> Action {
    if node == rules.node {
        return Action::None;
    }
    let Some(remote_path) = path_of(name) else {
        return Action::None;
    };
    if !notice && let Some((_, names)) = st.nodes.get_mut(&node) {
        names.remove(name);
        if names.is_empty() {
            st.nodes.remove(&node);
        }
    }
    let withdrawn = if notice {
        true
    } else {
        st.withdrawn.remove(&(node, remote_path.to_owned()))
    };
    let Some(local) = st.local_of.get(remote_path).cloned() else {
        return Action::None;
    };
    let Some(r) = st.remotes.get_mut(&local) else {
        return Action::None;
    };
    if !notice && r.providers.remove(&node).is_none() {
        return Action::None;
    }
    if !r.providers.is_empty() {
        let merged = merge(r.remote_path.clone(), &r.providers);
        r.last_keys = r.providers.values().map(|(k, _)| k.clone()).collect();
        return match &r.mounted {
            Some(m) if m.signature != signature(&merged) => Action::Mount {
                local,
                descriptor: merged,
            },
            _ => Action::None,
        };
    }
    if withdrawn {
        // The last provider unpublished the path on purpose: remove the proxy now.
        let mounted = r.mounted.take();
        st.remotes.remove(&local);
        st.local_of.remove(remote_path);
        return match mounted {
            Some(mounted) => Action::Unmount { local, mounted },
            None => Action::None,
        };
    }
    // The last provider is gone: answer 503 at once, remove after the grace period.
    r.grace_epoch += 1;
    let epoch = r.grace_epoch;
    let Some(m) = r.mounted.as_mut() else {
        st.remotes.remove(&local);
        st.local_of.remove(remote_path);
        return Action::None;
    };
    m.state.available.store(false, Ordering::Release);
    if let Some(t) = m.grace_task.take() {
        t.abort();
    }
    Action::StartGrace { local, epoch }
}

/// A withdrawal notice (`notice`, from the withdrawn topic) arrived from node `from`.
pub(super) fn withdrawal_notice(
    st: &mut State,
    rules: &Rules<'_>,
    from: NodeId,
    notice: &Value,
) -> Action {
    let Ok(w) = serde_json::from_value::<Withdrawn>(notice.clone()) else {
        return Action::None;
    };
    let Ok(node) = w.node.parse::<NodeId>() else {
        return Action::None;
    };
    if node == rules.node {
        return Action::None;
    }
    if node != from {
        // A node withdraws only what it published itself.
        tracing::warn!(target: LOG, peer = %from, named = %node, path = %w.path, "a withdrawal notice for another node; ignored");
        return Action::None;
    }
    let still_provider = st
        .local_of
        .get(&w.path)
        .and_then(|l| st.remotes.get(l))
        .is_some_and(|r| r.providers.contains_key(&node));
    if still_provider {
        // The table removal has not arrived yet: remember the notice for it.
        if st.withdrawn.len() >= MAX_WITHDRAWN {
            st.withdrawn.clear();
        }
        st.withdrawn.insert((node, w.path.clone()));
        return Action::None;
    }
    let in_grace = st
        .local_of
        .get(&w.path)
        .and_then(|l| st.remotes.get(l))
        .is_some_and(|r| r.providers.is_empty());
    if in_grace {
        return provider_removed(st, rules, &endpoint(&w.path), node, true);
    }
    Action::None
}

/// The grace period of `local` that started at `epoch` is over.
pub(super) fn grace_over(st: &mut State, local: &str, epoch: u64) -> Action {
    let Some(r) = st.remotes.get_mut(local) else {
        return Action::None;
    };
    if r.grace_epoch != epoch || !r.providers.is_empty() {
        return Action::None;
    }
    let mounted = r.mounted.take();
    let remote_path = r.remote_path.clone();
    st.remotes.remove(local);
    st.local_of.remove(&remote_path);
    match mounted {
        Some(mut mounted) => {
            // The grace task is the one running this: it ends by itself.
            mounted.grace_task = None;
            tracing::info!(target: LOG, path = %local, "grace period over; proxy removed");
            Action::Unmount {
                local: local.to_owned(),
                mounted,
            }
        }
        None => Action::None,
    }
}

/// `local` may be mountable now (a local service left the path).
pub(super) fn recheck(st: &State, local: &str) -> Action {
    match st.remotes.get(local) {
        Some(r) if r.mounted.is_none() && !r.providers.is_empty() => Action::Mount {
            local: local.to_owned(),
            descriptor: merge(r.remote_path.clone(), &r.providers),
        },
        _ => Action::None,
    }
}

impl Shared {
    fn rules(&self) -> Rules<'_> {
        Rules {
            node: self.node,
            opts: &self.opts,
        }
    }

    /// Decide under the state lock, act after it.
    fn decide(self: &Arc<Self>, f: impl FnOnce(&mut State, &Rules<'_>) -> Action) {
        let action = {
            let mut st = lock(&self.state);
            f(&mut st, &self.rules())
        };
        self.act(action);
    }

    pub(super) fn on_table(self: &Arc<Self>, ev: TableEvent) {
        self.decide(|st, rules| match ev {
            TableEvent::Added {
                name,
                node,
                key,
                descriptor,
            } => provider_added(st, rules, &name, node, key, &descriptor),
            TableEvent::Removed { name, node, .. } => {
                provider_removed(st, rules, &name, node, false)
            }
        });
    }

    pub(super) fn on_withdrawn(self: &Arc<Self>, from: NodeId, notice: &Value) {
        self.decide(|st, rules| withdrawal_notice(st, rules, from, notice));
    }

    pub(super) fn grace_over(self: &Arc<Self>, local: &str, epoch: u64) {
        self.decide(|st, _| grace_over(st, local, epoch));
    }

    pub(super) fn recheck(self: &Arc<Self>, local: &str) {
        self.decide(|st, _| recheck(st, local));
    }
}

/// The descriptor the proxy uses: the union of what its providers publish.
pub(super) fn merge(
    remote_path: String,
    providers: &BTreeMap<NodeId, (String, ServiceDescriptor)>,
) -> ServiceDescriptor {
    let mut out = ServiceDescriptor {
        plume: DESCRIPTOR_VERSION,
        path: remote_path,
        key: String::new(),
        methods: Vec::new(),
        idempotent: Vec::new(),
        events: Vec::new(),
        remote_options: None,
        schema: None,
    };
    for (_, d) in providers.values() {
        if out.key.is_empty() {
            out.key.clone_from(&d.key);
        }
        for (src, dst) in [
            (&d.methods, &mut out.methods),
            (&d.idempotent, &mut out.idempotent),
            (&d.events, &mut out.events),
        ] {
            for m in src {
                if !dst.contains(m) {
                    dst.push(m.clone());
                }
            }
        }
        if out.remote_options.is_none() {
            out.remote_options.clone_from(&d.remote_options);
        }
        if out.schema.is_none() {
            out.schema.clone_from(&d.schema);
        }
    }
    out
}

pub(super) fn signature(d: &ServiceDescriptor) -> (Vec<String>, Vec<String>) {
    let mut m = d.methods.clone();
    m.sort();
    let mut e = d.events.clone();
    e.sort();
    (m, e)
}

pub(super) async fn table_loop(
    weak: Weak<Shared>,
    mut table: crate::mesh::TableWatch,
    mut withdrawn: crate::mesh::Subscription,
    mut recheck: mpsc::Receiver<String>,
) {
    loop {
        tokio::select! {
            ev = table.recv() => {
                let Some(ev) = ev else { break };
                let Some(s) = weak.upgrade() else { break };
                s.on_table(ev);
            }
            msg = withdrawn.recv_from() => {
                let Some((from, msg)) = msg else { break };
                let Some(s) = weak.upgrade() else { break };
                s.on_withdrawn(from, &msg);
            }
            path = recheck.recv() => {
                let Some(path) = path else { break };
                let Some(s) = weak.upgrade() else { break };
                s.recheck(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::health::{Health, HealthView};
    use super::super::proxy::ProxyState;
    use super::super::runtime::Mounted;
    use super::*;

    const ME: NodeId = NodeId(1);
    const A: NodeId = NodeId(2);
    const B: NodeId = NodeId(3);

    fn descriptor(path: &str, methods: &[&str]) -> Value {
        json!({
            "plume": DESCRIPTOR_VERSION,
            "path": path,
            "key": "k",
            "methods": methods,
            "events": [],
        })
    }

    fn added(st: &mut State, opts: &Distribution, node: NodeId, d: &Value) -> Action {
        let rules = Rules { node: ME, opts };
        let path = d["path"].as_str().unwrap_or_default().to_owned();
        provider_added(st, &rules, &endpoint(&path), node, "k".into(), d)
    }

    fn removed(st: &mut State, opts: &Distribution, node: NodeId, path: &str) -> Action {
        let rules = Rules { node: ME, opts };
        provider_removed(st, &rules, &endpoint(path), node, false)
    }

    /// A mounted proxy for the state machine (a stand-in service: nothing calls it).
    fn test_mounted() -> Mounted {
        let view: std::sync::Weak<dyn HealthView> = std::sync::Weak::<Shared>::new();
        Mounted {
            service: Arc::new(Health { view }),
            state: Arc::new(ProxyState::default()),
            signature: (vec!["find".to_owned()], Vec::new()),
            events_task: None,
            grace_task: None,
        }
    }

    fn mounts(action: &Action, path: &str) -> bool {
        matches!(action, Action::Mount { local, .. } if local == path)
    }

    #[test]
    fn a_first_provider_mounts_and_more_providers_merge_their_methods() {
        let (mut st, opts) = (State::default(), Distribution::new());
        let a = added(&mut st, &opts, A, &descriptor("todos", &["find"]));
        assert!(mounts(&a, "todos"));
        // Not mounted yet (the executor mounts): another provider asks again, with the union.
        let b = added(&mut st, &opts, B, &descriptor("todos", &["get"]));
        let Action::Mount { descriptor, .. } = b else {
            panic!("a mount");
        };
        assert_eq!(descriptor.methods, ["find", "get"]);
        assert_eq!(st.remotes["todos"].providers.len(), 2);
    }

    #[test]
    fn what_is_not_a_consumable_service_mounts_nothing() {
        let (mut st, opts) = (State::default(), Distribution::new());
        // This node's own endpoint, a foreign endpoint, a descriptor of another path.
        assert!(matches!(
            added(&mut st, &opts, ME, &descriptor("todos", &["find"])),
            Action::None
        ));
        let rules = Rules {
            node: ME,
            opts: &opts,
        };
        let foreign = provider_added(&mut st, &rules, "add", A, "k".into(), &json!(null));
        assert!(matches!(foreign, Action::None));
        let lying = provider_added(
            &mut st,
            &rules,
            &endpoint("users"),
            A,
            "k".into(),
            &descriptor("todos", &["find"]),
        );
        assert!(matches!(lying, Action::None));
        assert!(st.remotes.is_empty());
        // Filtered out by the options.
        let opts = Distribution::new().remote_services(false);
        assert!(matches!(
            added(&mut st, &opts, A, &descriptor("todos", &["find"])),
            Action::None
        ));
        assert!(st.remotes.is_empty());
    }

    #[test]
    fn two_remote_paths_renamed_to_one_local_path_keep_the_first() {
        let mut st = State::default();
        let opts = Distribution::new().remote_service_path(|_| "all".to_owned());
        assert!(mounts(
            &added(&mut st, &opts, A, &descriptor("todos", &["find"])),
            "all"
        ));
        assert!(matches!(
            added(&mut st, &opts, B, &descriptor("users", &["find"])),
            Action::None
        ));
        assert_eq!(st.remotes["all"].remote_path, "todos");
    }

    #[test]
    fn providers_leaving_an_unmounted_path_forget_it() {
        let (mut st, opts) = (State::default(), Distribution::new());
        added(&mut st, &opts, A, &descriptor("todos", &["find"]));
        added(&mut st, &opts, B, &descriptor("todos", &["find"]));
        assert!(matches!(removed(&mut st, &opts, A, "todos"), Action::None));
        assert_eq!(st.remotes["todos"].providers.len(), 1);
        // A removal of a provider it never had changes nothing.
        assert!(matches!(removed(&mut st, &opts, A, "todos"), Action::None));
        assert!(matches!(removed(&mut st, &opts, B, "todos"), Action::None));
        assert!(st.remotes.is_empty() && st.local_of.is_empty() && st.nodes.is_empty());
        assert!(matches!(recheck(&st, "todos"), Action::None));
    }

    #[test]
    fn an_early_withdrawal_notice_is_kept_for_the_table_removal_and_bounded() {
        let (mut st, opts) = (State::default(), Distribution::new());
        added(&mut st, &opts, A, &descriptor("todos", &["find"]));
        let rules = Rules {
            node: ME,
            opts: &opts,
        };
        let notice = json!({ "node": A.to_string(), "path": "todos" });
        assert!(matches!(
            withdrawal_notice(&mut st, &rules, A, &notice),
            Action::None
        ));
        assert!(st.withdrawn.contains(&(A, "todos".to_owned())));
        // The table removal consumes the notice.
        removed(&mut st, &opts, A, "todos");
        assert!(st.withdrawn.is_empty());
        // Notices are bounded.
        added(&mut st, &opts, A, &descriptor("todos", &["find"]));
        for n in 0..(MAX_WITHDRAWN + 10) {
            st.withdrawn.insert((NodeId(1000 + n as u128), "x".into()));
        }
        withdrawal_notice(&mut st, &rules, A, &notice);
        assert!(st.withdrawn.len() <= MAX_WITHDRAWN);
        // Malformed notices and our own are ignored.
        for bad in [json!(7), json!({ "node": ME.to_string(), "path": "todos" })] {
            assert!(matches!(
                withdrawal_notice(&mut st, &rules, ME, &bad),
                Action::None
            ));
        }
    }

    #[test]
    fn a_withdrawal_notice_from_another_node_is_refused() {
        let (mut st, opts) = (State::default(), Distribution::new());
        let rules = Rules {
            node: ME,
            opts: &opts,
        };
        let notice = json!({ "node": A.to_string(), "path": "todos" });
        // A still provides the path: B's notice is not remembered for A's next removal.
        added(&mut st, &opts, A, &descriptor("todos", &["find"]));
        assert!(matches!(
            withdrawal_notice(&mut st, &rules, B, &notice),
            Action::None
        ));
        assert!(st.withdrawn.is_empty());
        // A's link died: its proxy is in its grace period, which B's notice does not cut short.
        if let Some(r) = st.remotes.get_mut("todos") {
            r.mounted = Some(test_mounted());
        }
        assert!(matches!(
            removed(&mut st, &opts, A, "todos"),
            Action::StartGrace { .. }
        ));
        assert!(matches!(
            withdrawal_notice(&mut st, &rules, B, &notice),
            Action::None
        ));
        assert!(st.remotes.contains_key("todos"));
        // A's own notice ends it.
        assert!(matches!(
            withdrawal_notice(&mut st, &rules, A, &notice),
            Action::Unmount { .. }
        ));
        assert!(!st.remotes.contains_key("todos"));
    }

    #[test]
    fn a_peer_gets_a_bounded_number_of_proxies() {
        let (mut st, opts) = (State::default(), Distribution::new());
        let paths = |n: usize| (0..n).map(|i| format!("svc{i}"));
        for (i, path) in paths(MAX_SERVICES_PER_PEER + 50).enumerate() {
            let action = added(&mut st, &opts, A, &descriptor(&path, &["find"]));
            assert_eq!(
                mounts(&action, &path),
                i < MAX_SERVICES_PER_PEER,
                "{path} of a peer announcing {} services",
                i + 1
            );
        }
        assert_eq!(st.remotes.len(), MAX_SERVICES_PER_PEER);
        assert_eq!(st.nodes[&A].1.len(), MAX_SERVICES_PER_PEER);
        // Re-describing a path it has is not a new one; another peer has its own allowance.
        assert!(mounts(
            &added(&mut st, &opts, A, &descriptor("svc0", &["find", "get"])),
            "svc0"
        ));
        assert!(mounts(
            &added(&mut st, &opts, B, &descriptor("other", &["find"])),
            "other"
        ));
        // A path it was refused stays refused while it is at the cap, and is mounted once it
        // withdrew another one.
        let last = format!("svc{MAX_SERVICES_PER_PEER}");
        assert!(matches!(
            added(&mut st, &opts, A, &descriptor(&last, &["find"])),
            Action::None
        ));
        removed(&mut st, &opts, A, "svc1");
        assert!(mounts(
            &added(&mut st, &opts, A, &descriptor(&last, &["find"])),
            &last
        ));
    }

    #[test]
    fn a_stale_grace_timer_does_nothing() {
        let (mut st, opts) = (State::default(), Distribution::new());
        added(&mut st, &opts, A, &descriptor("todos", &["find"]));
        let epoch = st.remotes["todos"].grace_epoch;
        // A provider is there: the timer of an older epoch, or any timer, removes nothing.
        assert!(matches!(
            grace_over(&mut st, "todos", epoch - 1),
            Action::None
        ));
        assert!(matches!(grace_over(&mut st, "todos", epoch), Action::None));
        assert!(st.remotes.contains_key("todos"));
        assert!(matches!(grace_over(&mut st, "nowhere", 1), Action::None));
    }
}
