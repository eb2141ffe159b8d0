//! The NATS service API (`$SRV.{PING|INFO|STATS}`), so standard NATS tooling (`nats micro`)
//! lists and measures a node's endpoints.

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use async_nats::Subscriber;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::NatsEngine;
use super::subjects::{service_name, token};
use crate::engine::Sink;
use crate::sync::lock;

#[derive(Debug, Default)]
pub(super) struct EndpointStats {
    pub(super) requests: u64,
    pub(super) errors: u64,
    pub(super) nanos: u128,
    pub(super) last_error: String,
}

impl NatsEngine {
    pub(super) async fn serve_srv(
        self: Arc<Self>,
        sink: Weak<dyn Sink>,
        mut subs: futures::stream::SelectAll<Subscriber>,
    ) {
        loop {
            let m = tokio::select! {
                () = self.stop.cancelled() => return,
                m = subs.next() => m,
            };
            let Some(m) = m else { return };
            let Some(reply) = m.reply.clone() else {
                continue;
            };
            let Some(sink) = sink.upgrade() else { return };
            let verb = m.subject.split('.').nth(1).unwrap_or_default().to_owned();
            let body = self.srv_answer(sink.as_ref(), &verb);
            let _ = self
                .client
                .publish(
                    reply,
                    Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
                )
                .await;
        }
    }

    fn srv_answer(&self, sink: &dyn Sink, verb: &str) -> Value {
        let name = service_name(&self.key);
        let id = self.node.to_string();
        let version = env!("CARGO_PKG_VERSION");
        let metadata = json!({
            "plume.environment": self.environment,
            "plume.key": self.key,
        });
        let names = sink.endpoint_names();
        match verb {
            "PING" => json!({
                "type": "io.nats.micro.v1.ping_response",
                "name": name, "id": id, "version": version, "metadata": metadata,
            }),
            "INFO" => {
                let endpoints: Vec<Value> = names
                    .iter()
                    .map(|n| {
                        json!({
                            "name": token(n),
                            "subject": self.svc_subject(n),
                            "queue_group": token(n),
                            "metadata": {"plume.path": n},
                        })
                    })
                    .collect();
                json!({
                    "type": "io.nats.micro.v1.info_response",
                    "name": name, "id": id, "version": version, "metadata": metadata,
                    "description": format!("Plume services of key '{}' in environment '{}'", self.key, self.environment),
                    "endpoints": endpoints,
                })
            }
            _ => {
                let stats = lock(&self.stats);
                let endpoints: Vec<Value> = names
                    .iter()
                    .map(|n| {
                        let s = stats.get(n);
                        let requests = s.map_or(0, |s| s.requests);
                        let nanos = s.map_or(0, |s| s.nanos);
                        json!({
                            "name": token(n),
                            "subject": self.svc_subject(n),
                            "queue_group": token(n),
                            "num_requests": requests,
                            "num_errors": s.map_or(0, |s| s.errors),
                            "last_error": s.map_or("", |s| s.last_error.as_str()),
                            "processing_time": u64::try_from(nanos).unwrap_or(u64::MAX),
                            "average_processing_time": u64::try_from(nanos.checked_div(u128::from(requests)).unwrap_or(0)).unwrap_or(u64::MAX),
                            "data": null,
                        })
                    })
                    .collect();
                json!({
                    "type": "io.nats.micro.v1.stats_response",
                    "name": name, "id": id, "version": version, "metadata": metadata,
                    "started": rfc3339(self.started),
                    "endpoints": endpoints,
                })
            }
        }
    }
}

/// `t` as RFC 3339 in UTC, e.g. `2024-01-02T03:04:05.678Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
