//! The standard OpenTelemetry variables this export reads.

use std::time::Duration;

/// A variable's value, when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The traces URL the variables configure, if any: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it
/// is, else `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces` appended; `None` when neither is
/// set, or `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER` names no `otlp` exporter.
pub fn endpoint_from_env() -> Option<String> {
    endpoint_from(var)
}

pub(crate) fn endpoint_from(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if var("OTEL_TRACES_EXPORTER").is_some_and(|v| !v.split(',').any(|e| e.trim() == "otlp")) {
        return None;
    }
    var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    })
}

/// `OTEL_SERVICE_NAME`, when set.
pub(crate) fn service_name_from_env() -> Option<String> {
    var("OTEL_SERVICE_NAME")
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else
/// 10 s.
pub(crate) fn timeout_from_env() -> Duration {
    var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
        .or_else(|| var("OTEL_EXPORTER_OTLP_TIMEOUT"))
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::endpoint_from;

    fn with(vars: &[(&str, &str)]) -> Option<String> {
        endpoint_from(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .filter(|v| !v.is_empty())
        })
    }

    #[test]
    fn no_endpoint_without_a_variable() {
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[("OTEL_SERVICE_NAME", "gw")]), None);
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]), None);
    }

    #[test]
    fn the_signal_variable_is_taken_as_it_is_and_the_base_gets_the_path() {
        assert_eq!(
            with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]).as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            with(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/t")
            ])
            .as_deref(),
            Some("http://127.0.0.1:9/t")
        );
    }

    #[test]
    fn disabled_or_another_exporter_means_none() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(with(&[endpoint, ("OTEL_SDK_DISABLED", "true")]), None);
        assert_eq!(with(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]), None);
        assert!(with(&[endpoint, ("OTEL_TRACES_EXPORTER", "otlp")]).is_some());
    }
}
