//! The `#[service]` attribute for Plume. Use it through `plume::service`.
