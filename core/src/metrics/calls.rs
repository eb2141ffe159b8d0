//! The per-service call metrics: pre-registered handles per method and provider, so that a
//! call costs a few atomic operations and no label formatting (feature `metrics`; without it
//! every function here is an empty inline one).

use crate::params::Params;

/// `plume_calls_total{path, method, provider, outcome}`.
pub const CALLS: &str = "plume_calls_total";
/// `plume_call_duration_seconds{path, method}` (histogram).
pub const CALL_DURATION: &str = "plume_call_duration_seconds";
/// `plume_calls_in_flight{path, method}`.
pub const CALLS_IN_FLIGHT: &str = "plume_calls_in_flight";
/// The label value of a path that is no service, and of a method the service does not offer.
pub const OTHER: &str = "other";

/// The `provider` label values, by [`provider_index`].
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const PROVIDERS: [&str; 4] = ["rest", "socketio", "mesh", "internal"];

/// The index in [`PROVIDERS`] of the transport that made a call: a call from another node is
/// `mesh` whatever its original client was.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn provider_index(params: &Params) -> usize {
    use crate::params::Provider;
    match (params.from_remote, params.provider) {
        (true, _) => 2,
        (false, Some(Provider::Rest)) => 0,
        (false, Some(Provider::Socketio)) => 1,
        (false, None) => 3,
    }
}

#[cfg(feature = "metrics")]
mod imp {
    use std::sync::{Arc, OnceLock};
    use std::time::Instant;

    use metrics::Counter;

    use super::{CALLS, OTHER, PROVIDERS, provider_index};
    use crate::error::Error;
    use crate::metrics::series::{self, CallSeries};
    use crate::params::{Method, Params, Provider};

    /// One method's handles: its latency histogram and in-flight gauge (Plume's own atomics,
    /// [`series`]), and a success counter per provider, made on its first success (a series
    /// appears once it has a sample, so a scrape holds only the methods and providers that were
    /// used).
    struct MethodHandles {
        path: String,
        method: String,
        ok: [OnceLock<Counter>; 4],
        series: Arc<CallSeries>,
    }

    impl MethodHandles {
        fn new(path: &str, method: &str) -> Self {
            Self {
                path: path.to_owned(),
                method: method.to_owned(),
                ok: Default::default(),
                series: series::series(path, method),
            }
        }

        fn ok(&self, provider: usize) -> &Counter {
            self.ok[provider].get_or_init(|| {
                metrics::counter!(
                    CALLS,
                    "path" => self.path.clone(),
                    "method" => self.method.clone(),
                    "provider" => PROVIDERS[provider],
                    "outcome" => "ok",
                )
            })
        }
    }

    /// A service's call metrics: the handles of a method are made on its first call after
    /// [`App::enable_metrics`](crate::App::enable_metrics).
    #[derive(Default)]
    pub(crate) struct CallMetrics {
        /// One per offered method, in order, then one for `other`.
        handles: OnceLock<Box<[OnceLock<MethodHandles>]>>,
    }

    impl CallMetrics {
        /// Start measuring a call, or `None` while metrics are off.
        #[inline]
        pub(crate) fn start(
            &self,
            path: &str,
            offered: &[Method],
            method: &Method,
            params: &Params,
        ) -> Option<CallGuard<'_>> {
            if !crate::metrics::enabled() {
                return None;
            }
            let slots = self
                .handles
                .get_or_init(|| (0..=offered.len()).map(|_| OnceLock::new()).collect());
            let index = offered.iter().position(|m| m == method);
            let handles = slots.get(index.unwrap_or(offered.len()))?.get_or_init(|| {
                let name = index
                    .and_then(|i| offered.get(i))
                    .map_or(OTHER, Method::as_str);
                MethodHandles::new(path, name)
            });
            handles.series.enter();
            Some(CallGuard {
                handles,
                provider: provider_index(params),
                started: Instant::now(),
            })
        }
    }

    /// One call being measured: the in-flight gauge goes down when it is dropped, finished or
    /// not (a cancelled call counts in no outcome).
    pub(crate) struct CallGuard<'a> {
        handles: &'a MethodHandles,
        provider: usize,
        started: Instant,
    }

    impl CallGuard<'_> {
        /// The call ended: count it under its outcome (`ok` or the error's code) and record its
        /// latency.
        pub(crate) fn finish(self, error: Option<&Error>) {
            let h = self.handles;
            h.series.record(self.started.elapsed());
            match error {
                None => h.ok(self.provider).increment(1),
                Some(err) => metrics::counter!(
                    CALLS,
                    "path" => h.path.clone(),
                    "method" => h.method.clone(),
                    "provider" => PROVIDERS[self.provider],
                    "outcome" => err.code().to_string(),
                )
                .increment(1),
            }
        }
    }

    impl Drop for CallGuard<'_> {
        fn drop(&mut self) {
            self.handles.series.leave();
        }
    }

    /// A call to a path that is no service (`path="other"`).
    pub(crate) fn unknown_path(provider: Provider, error: &Error) {
        if crate::metrics::enabled() {
            metrics::counter!(
                CALLS,
                "path" => OTHER,
                "method" => OTHER,
                "provider" => provider.as_str(),
                "outcome" => error.code().to_string(),
            )
            .increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use crate::error::Error;
    use crate::params::{Method, Params};

    /// Without the feature `metrics`: nothing.
    #[derive(Default)]
    pub(crate) struct CallMetrics {
        _none: (),
    }

    /// Never made without the feature `metrics`.
    pub(crate) enum CallGuard {}

    impl CallMetrics {
        #[inline(always)]
        pub(crate) fn start(
            &self,
            _: &str,
            _: &[Method],
            _: &Method,
            _: &Params,
        ) -> Option<CallGuard> {
            None
        }
    }

    impl CallGuard {
        pub(crate) fn finish(self, _: Option<&Error>) {
            match self {}
        }
    }

    #[cfg(feature = "server")]
    #[inline(always)]
    pub(crate) fn unknown_path(_: crate::params::Provider, _: &Error) {}
}

pub(crate) use imp::CallMetrics;
#[cfg(feature = "server")]
pub(crate) use imp::unknown_path;
