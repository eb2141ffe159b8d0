//! Services registered by `#[service(path = "...")]`, collected at link time.

use crate::service::Service;

/// One service registered by `#[service(path = "...")]`.
#[derive(Debug)]
pub struct ServiceRegistration {
    /// The path the service is mounted at by [`App::use_registered`](crate::App::use_registered).
    pub path: &'static str,
    /// The Rust type's name, for diagnostics.
    pub type_name: &'static str,
    /// Builds the service (from `Default`).
    pub make: fn() -> Box<dyn Service>,
}

/// The link-time registry the `#[service]` macro adds to.
#[linkme::distributed_slice]
pub static SERVICES: [ServiceRegistration];

/// Every service registered in this binary, sorted by path.
pub fn registered() -> Vec<&'static ServiceRegistration> {
    let mut all: Vec<_> = SERVICES.iter().collect();
    all.sort_by_key(|r| r.path);
    all
}
