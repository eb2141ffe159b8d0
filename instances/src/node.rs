//! One member, engine-free: its voter, its membership view, its leadership (lease and ledger)
//! when it leads, and the election loop. A backend hands it the requests of other members
//! ([`Member::handle`]) and gives it a [`Link`] to send its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use plume_transport::NodeId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::InstanceSet;
use crate::ledger::{Ledger, Refusal};
use crate::settings::Settings;
use crate::view::View;
use crate::vote::{Lease, Voter};
use crate::wire::{Answer, Message};

pub(crate) const LOG: &str = "plume::instances";

/// How one member reaches another.
#[async_trait]
pub trait Link: Send + Sync + 'static {
    /// Send `message` to `to` and wait for its answer, at most `timeout`.
    async fn call(
        &self,
        to: NodeId,
        message: &Message,
        timeout: Duration,
    ) -> Result<Answer, crate::InstanceError>;
}

/// This node leads: its lease and its table.
#[derive(Debug)]
struct Leading {
    until: Instant,
    ledger: Ledger,
}

/// What one member knows (shared by its loops and its request handler).
#[derive(Debug)]
pub struct Member {
    me: NodeId,
    settings: Settings,
    voter: Mutex<Voter>,
    view: Mutex<View>,
    leading: Mutex<Option<Leading>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A snapshot for status pages.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LeaderStatus {
    /// The leader's term.
    pub term: u64,
    /// Configuration id → (node id in hex, fencing token), for every unexpired hold.
    pub holders: BTreeMap<String, (String, u64)>,
}

impl Member {
    /// A member `me` with `settings`.
    pub fn new(me: NodeId, settings: Settings) -> Member {
        Member {
            me,
            settings,
            voter: Mutex::new(Voter::new(settings.lease)),
            view: Mutex::new(View::new(me)),
            leading: Mutex::new(None),
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Membership changes, from the backend.
    pub fn member_up(&self, node: NodeId) {
        lock(&self.view).up(node);
    }

    /// A member left on purpose.
    pub fn member_left(&self, node: NodeId) {
        lock(&self.view).left(node);
    }

    /// A member was lost.
    pub fn member_lost(&self, node: NodeId) {
        lock(&self.view).lost(node, Instant::now());
    }

    /// The members as this node counts them.
    pub fn members(&self) -> Vec<NodeId> {
        lock(&self.view).members()
    }

    pub(crate) fn adopt(&self, members: &[NodeId]) {
        lock(&self.view).adopt(members, Instant::now());
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        let now = Instant::now();
        lock(&self.leading).as_ref().is_some_and(|l| l.until > now)
    }

    /// The node this one believes leads (itself, or the candidate its vote backs).
    pub fn leader(&self) -> Option<NodeId> {
        if self.is_leader() {
            return Some(self.me);
        }
        lock(&self.voter).backing(Instant::now()).map(|(n, _)| n)
    }

    /// The leader's table, when this node leads.
    pub fn leader_status(&self) -> Option<LeaderStatus> {
        let now = Instant::now();
        let leading = lock(&self.leading);
        let l = leading.as_ref().filter(|l| l.until > now)?;
        Some(LeaderStatus {
            term: l.ledger.term(),
            holders: l
                .ledger
                .holders(now)
                .into_iter()
                .map(|(c, (n, f))| (c, (n.to_string(), f)))
                .collect(),
        })
    }

    /// Answer a request of member `from`.
    pub fn handle(&self, from: NodeId, message: Message) -> Answer {
        let now = Instant::now();
        match message {
            Message::Vote { term } => Answer::Ballot(lock(&self.voter).ask(from, term, now)),
            Message::Release { term } => {
                lock(&self.voter).release(from, term, now);
                Answer::Released
            }
            Message::Poll {
                seq,
                held,
                had,
                refused,
            } => {
                let (live, members) = {
                    let view = lock(&self.view);
                    (view.live(), view.members())
                };
                let mut leading = lock(&self.leading);
                let Some(l) = leading.as_mut().filter(|l| l.until > now) else {
                    return Answer::NotLeader;
                };
                l.ledger.set_refused(from, &refused);
                match l.ledger.poll(from, seq, &held, &had, &live, now, l.until) {
                    Ok(mut grants) => {
                        grants.members = members.iter().map(NodeId::to_string).collect();
                        Answer::Grants(grants)
                    }
                    Err(Refusal::TooManyNodes) => {
                        tracing::warn!(target: LOG, %from, "poll refused: too many nodes");
                        Answer::NotLeader
                    }
                }
            }
        }
    }

    fn step_down(&self) {
        if lock(&self.leading).take().is_some() {
            tracing::info!(target: LOG, node = %self.me, "no longer leader");
        }
    }

    /// One round of votes for `lease` (a candidacy or a renewal): true while it holds.
    async fn round(&self, link: &dyn Link, lease: &mut Lease, highest: &mut u64) -> bool {
        let sent = Instant::now();
        let members = self.members();
        let term = lease.term;
        if lock(&self.voter).ask(self.me, term, sent).granted {
            lease.granted(self.me, sent);
        }
        let timeout = self.settings.call_timeout;
        let asks = members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| async move { (*m, link.call(*m, &Message::Vote { term }, timeout).await) });
        for (voter, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Answer::Ballot(b)) => {
                    *highest = (*highest).max(b.term);
                    if b.granted {
                        lease.granted(voter, sent);
                    }
                }
                Ok(other) => tracing::debug!(target: LOG, %voter, "unexpected answer {other:?}"),
                Err(e) => tracing::debug!(target: LOG, %voter, "vote: {e}"),
            }
        }
        let now = Instant::now();
        match lease.holds_until(&members, now) {
            Some(until) => {
                let mut leading = lock(&self.leading);
                match leading.as_mut() {
                    Some(l) if l.ledger.term() == term => l.until = until,
                    _ => {
                        tracing::info!(target: LOG, node = %self.me, term, "leader");
                        *leading = Some(Leading {
                            until,
                            ledger: Ledger::new(term, now, self.settings.silent_after),
                        });
                    }
                }
                true
            }
            None => false,
        }
    }

    /// Give back the votes of a candidacy that did not win.
    async fn release(&self, link: &dyn Link, term: u64) {
        lock(&self.voter).release(self.me, term, Instant::now());
        let timeout = self.settings.call_timeout;
        let members = self.members();
        let calls = members
            .iter()
            .filter(|m| **m != self.me)
            .map(|m| async move {
                let _ = link.call(*m, &Message::Release { term }, timeout).await;
            });
        futures::future::join_all(calls).await;
    }

    /// Refresh the leader's configurations from the set.
    async fn refresh_configs<S: InstanceSet>(&self, set: &S) {
        match tokio::time::timeout(self.settings.lease, set.get_config()).await {
            Ok(Ok(configs)) => {
                if let Some(l) = lock(&self.leading).as_mut() {
                    l.ledger.set_configs(configs);
                }
            }
            Ok(Err(e)) => tracing::warn!(target: LOG, "get_config failed: {e}"),
            Err(_) => tracing::warn!(target: LOG, "get_config timed out"),
        }
    }

    /// The election loop: lead (renew), or stand when nobody is backed, until `stop`.
    pub(crate) async fn elect<S: InstanceSet>(
        self: Arc<Self>,
        link: Arc<dyn Link>,
        set: Arc<S>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut lease: Option<Lease> = None;
        let mut highest = 0u64;
        let renew = self.settings.renew;
        // Rounds start every `renew` whatever they wait for (a lost member's timeout), so the
        // lease is extended well before the followers' grants run out.
        let mut last_round = Instant::now();
        let born = last_round;
        loop {
            let wake = if lease.is_some() {
                last_round + renew
            } else {
                // Jitter, so that candidates rarely stand at the same moment.
                Instant::now() + renew + renew.mul_f64(rand::random::<f64>())
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = stop.changed() => break,
            }
            last_round = Instant::now();
            match lease.as_mut() {
                Some(l) => {
                    if self.round(link.as_ref(), l, &mut highest).await {
                        self.refresh_configs(set.as_ref()).await;
                        self.forget_lost();
                    } else {
                        self.step_down();
                        lease = None;
                    }
                }
                None => {
                    let now = Instant::now();
                    let backed = lock(&self.voter).backing(now);
                    // A new member first listens for a lease: discovery finds the others, and
                    // a leader already there asks for its vote.
                    if backed.is_some() || now.duration_since(born) < self.settings.lease {
                        continue;
                    }
                    let term = highest.max(lock(&self.voter).seen()) + 1;
                    highest = term;
                    let mut l = Lease::new(term, self.settings.lease, self.settings.drift)
                        .min_members(self.settings.min_members);
                    if self.round(link.as_ref(), &mut l, &mut highest).await {
                        self.refresh_configs(set.as_ref()).await;
                        lease = Some(l);
                    } else {
                        self.release(link.as_ref(), term).await;
                    }
                }
            }
        }
        // A leader that stops lets its lease run out (it never releases a used term).
        self.step_down();
    }

    fn forget_lost(&self) {
        let forgotten = lock(&self.view).forget_one(self.settings.forget_after, Instant::now());
        if let Some(n) = forgotten {
            tracing::info!(target: LOG, node = %n, "lost member forgotten");
        }
    }
}
