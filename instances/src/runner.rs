//! One node's instances: it polls the leader, runs exactly what it was granted while the grant
//! holds, stops everything the moment its lease would end, and checks health. One loop, so a
//! poll, a health check and an expiry never interleave.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plume_transport::NodeId;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::InstanceSet;
use crate::backoff::Failures;
use crate::node::{LOG, Link, Member};
use crate::wire::{Answer, Grants, InstanceConfig, Message};

/// One running instance.
struct Running<I> {
    config: InstanceConfig,
    fencing: u64,
    instance: I,
}

/// What this node runs, for status pages: configuration id → fencing token.
pub(crate) type Holding = Arc<Mutex<BTreeMap<String, u64>>>;

pub(crate) struct Runner<S: InstanceSet> {
    member: Arc<Member>,
    link: Arc<dyn Link>,
    set: Arc<S>,
    running: BTreeMap<String, Running<S::Instance>>,
    /// Until when this node's grants hold (None: it holds nothing).
    until: Option<Instant>,
    /// What it ran when its lease lapsed (told to the next leader).
    had: Vec<String>,
    seq: u64,
    holding: Holding,
    /// Configurations whose creation failed.
    failures: Failures,
}

impl<S: InstanceSet> Runner<S> {
    pub(crate) fn new(
        member: Arc<Member>,
        link: Arc<dyn Link>,
        set: Arc<S>,
        holding: Holding,
    ) -> Self {
        Runner {
            member,
            link,
            set,
            running: BTreeMap::new(),
            until: None,
            had: Vec::new(),
            seq: 0,
            holding,
            failures: Failures::default(),
        }
    }

    fn publish(&self) {
        let mut h = self.holding.lock().unwrap_or_else(PoisonError::into_inner);
        *h = self
            .running
            .iter()
            .map(|(id, r)| (id.clone(), r.fencing))
            .collect();
    }

    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let settings = *self.member.settings();
        let mut poll = tokio::time::interval(settings.renew);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut health = tokio::time::interval(settings.health_interval);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let expiry = self.until;
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = sleep_until_opt(expiry) => self.lapse().await,
                _ = poll.tick() => self.poll().await,
                _ = health.tick() => self.check().await,
            }
            self.enforce().await;
        }
        self.stop_all().await;
        self.until = None;
        self.publish();
    }

    /// Stop everything once the lease has run out.
    async fn enforce(&mut self) {
        if self.until.is_some_and(|u| Instant::now() >= u) {
            self.lapse().await;
        }
    }

    async fn lapse(&mut self) {
        if !self.running.is_empty() {
            tracing::warn!(target: LOG, node = %self.member.me(), "lease lapsed: stopping every instance");
        }
        self.had = self.running.keys().cloned().collect();
        self.stop_all().await;
        self.until = None;
        self.publish();
    }

    async fn stop_all(&mut self) {
        let all = std::mem::take(&mut self.running);
        for (_, r) in all {
            self.set.disconnect_instance(r.instance).await;
        }
    }

    async fn poll(&mut self) {
        let Some(leader) = self.member.leader() else {
            return;
        };
        self.seq += 1;
        let message = Message::Poll {
            seq: self.seq,
            held: self.running.keys().cloned().collect(),
            had: self.had.clone(),
            refused: self.failures.refused(self.member.settings()),
        };
        let sent = Instant::now();
        let settings = *self.member.settings();
        // Never wait past the current lease: the loop must be free to stop at expiry.
        let timeout = match self.until {
            Some(u) => settings.call_timeout.min(u.saturating_duration_since(sent)),
            None => settings.call_timeout,
        };
        let answer = if leader == self.member.me() {
            Ok(self.member.handle(leader, message))
        } else if timeout.is_zero() {
            return;
        } else {
            self.link.call(leader, &message, timeout).await
        };
        match answer {
            Ok(Answer::Grants(grants)) => self.apply(sent, grants).await,
            Ok(Answer::NotLeader) => {}
            Ok(other) => tracing::debug!(target: LOG, "unexpected answer {other:?}"),
            Err(e) => tracing::debug!(target: LOG, %leader, "poll: {e}"),
        }
    }

    async fn apply(&mut self, sent: Instant, grants: Grants) {
        let settings = *self.member.settings();
        let until =
            sent + Duration::from_millis(grants.valid_for_ms).saturating_sub(settings.drift);
        let members: Vec<NodeId> = grants
            .members
            .iter()
            .filter_map(|m| m.parse().ok())
            .collect();
        if !members.is_empty() {
            self.member.adopt(&members);
        }
        let granted: BTreeMap<String, (InstanceConfig, u64)> = grants
            .grants
            .into_iter()
            .map(|g| (g.config.id.clone(), (g.config, g.fencing)))
            .collect();
        // Stop first what is no longer granted (or granted afresh, under a new token).
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(id, r)| {
                granted
                    .get(*id)
                    .is_none_or(|(c, f)| *f != r.fencing || *c != r.config)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(r) = self.running.remove(&id) {
                self.set.disconnect_instance(r.instance).await;
            }
        }
        if Instant::now() >= until {
            self.publish();
            return;
        }
        self.until = Some(until);
        self.had.clear();
        let now = Instant::now();
        let start: BTreeSet<String> = granted
            .keys()
            .filter(|id| !self.running.contains_key(*id) && self.failures.may_create(id, now))
            .cloned()
            .collect();
        for id in start {
            if Instant::now() >= until {
                break;
            }
            let Some((config, fencing)) = granted.get(&id).cloned() else {
                continue;
            };
            self.create(config, fencing).await;
        }
        self.publish();
    }

    async fn create(&mut self, config: InstanceConfig, fencing: u64) {
        match self.set.create_instance(&config, fencing).await {
            Ok(instance) => {
                self.failures.succeeded(&config.id);
                self.running.insert(
                    config.id.clone(),
                    Running {
                        config,
                        fencing,
                        instance,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(target: LOG, id = %config.id, "create_instance failed: {e}");
                if self.failures.failed(&config.id, self.member.settings()) {
                    tracing::warn!(target: LOG, id = %config.id, "create_instance keeps failing: giving it up here, for another node");
                }
            }
        }
    }

    /// Check every instance; an unhealthy one is disconnected and created again (same lease,
    /// same token) while the lease holds.
    async fn check(&mut self) {
        let timeout = self.member.settings().call_timeout;
        let mut sick = Vec::new();
        for (id, r) in &self.running {
            let verdict =
                tokio::time::timeout(timeout, self.set.healthcheck_instance(&r.instance)).await;
            match verdict {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(target: LOG, %id, "unhealthy: {e}");
                    sick.push(id.clone());
                }
                Err(_) => {
                    tracing::warn!(target: LOG, %id, "health check timed out");
                    sick.push(id.clone());
                }
            }
        }
        for id in sick {
            if let Some(r) = self.running.remove(&id) {
                self.set.disconnect_instance(r.instance).await;
                let now = Instant::now();
                if self.until.is_some_and(|u| now < u) && self.failures.may_create(&id, now) {
                    self.create(r.config, r.fencing).await;
                }
            }
        }
        if !self.running.is_empty() || self.until.is_none() {
            self.publish();
        }
    }
}

pub(crate) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
