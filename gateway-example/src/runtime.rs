//! The binary's tokio runtime. `PLUME_WORKERS` sets its number of worker threads; unset (or
//! empty), tokio decides as before: `TOKIO_WORKER_THREADS` when set, else one per CPU.
//!
//! On a small host where the gateway shares its CPUs with its replicas and its clients, one
//! worker can serve more for the same CPU: no cross-thread wake-ups, no work stealing (see
//! docs/benchmarks.md, "Gateway under GET load, fourth round").

use anyhow::{Context, bail};

/// The environment variable that sets the number of worker threads.
pub(crate) const WORKERS_VAR: &str = "PLUME_WORKERS";

/// The most worker threads `PLUME_WORKERS` may ask for.
const MAX_WORKERS: usize = 1024;

/// The number of worker threads `value` (of `PLUME_WORKERS`) asks for: `None` when unset or
/// empty; an error unless it is a whole number from 1 to 1024.
pub(crate) fn workers(value: Option<&std::ffi::OsStr>) -> anyhow::Result<Option<usize>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().map(str::trim);
    match text {
        Some("") => Ok(None),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(Some(n)),
            _ => bail!(
                "{WORKERS_VAR} must be a number of worker threads from 1 to {MAX_WORKERS}, not {text:?}"
            ),
        },
        None => bail!("{WORKERS_VAR} must be a number of worker threads, not {value:?}"),
    }
}

/// The multi-thread runtime, with `workers` worker threads when given.
pub(crate) fn build(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder.build().context("starting the tokio runtime")
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn unset_or_empty_leaves_the_default() {
        assert_eq!(workers(None).ok(), Some(None));
        assert_eq!(workers(Some(OsStr::new(""))).ok(), Some(None));
        assert_eq!(workers(Some(OsStr::new("  "))).ok(), Some(None));
    }

    #[test]
    fn a_count_is_read() {
        assert_eq!(workers(Some(OsStr::new("1"))).ok(), Some(Some(1)));
        assert_eq!(workers(Some(OsStr::new(" 2 "))).ok(), Some(Some(2)));
        assert_eq!(workers(Some(OsStr::new("1024"))).ok(), Some(Some(1024)));
    }

    #[test]
    fn anything_else_is_refused_with_the_variable_named() {
        for bad in ["0", "-1", "two", "1.5", "1025", "99999999999999999999999"] {
            let err = workers(Some(OsStr::new(bad))).expect_err(bad).to_string();
            assert!(
                err.starts_with("PLUME_WORKERS must be a number of worker threads")
                    && err.contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_runtime_has_the_workers_asked_for() {
        let rt = build(Some(1)).expect("a runtime");
        assert_eq!(rt.metrics().num_workers(), 1);
        let rt = build(Some(3)).expect("a runtime");
        assert_eq!(rt.metrics().num_workers(), 3);
    }
}
