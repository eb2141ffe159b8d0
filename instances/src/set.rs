//! What an application implements: the configurations, and how to create, check and stop one
//! instance of a configuration.

use async_trait::async_trait;

use crate::wire::InstanceConfig;

/// A set of long-lived instances (workers, pollers, outbound clients), at most one per
/// configuration in the whole set, spread over every node that registers the same set name.
///
/// ```
/// use plume_instances::{InstanceConfig, InstanceSet};
/// use serde_json::json;
///
/// struct Pollers;
///
/// #[async_trait::async_trait]
/// impl InstanceSet for Pollers {
///     type Instance = tokio::task::JoinHandle<()>;
///
///     async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error> {
///         Ok((1..=3).map(|i| InstanceConfig::new(i.to_string(), json!({ "feed": i }))).collect())
///     }
///
///     async fn create_instance(
///         &self,
///         config: &InstanceConfig,
///         fencing: u64,
///     ) -> Result<Self::Instance, plume::Error> {
///         let feed = config.data["feed"].clone();
///         // Hand `fencing` to whatever the instance writes to, so stale writers are refused.
///         Ok(tokio::spawn(async move { let _ = (feed, fencing); }))
///     }
///
///     async fn disconnect_instance(&self, instance: Self::Instance) {
///         instance.abort();
///     }
/// }
/// ```
#[async_trait]
pub trait InstanceSet: Send + Sync + 'static {
    /// One running instance.
    type Instance: Send + Sync + 'static;

    /// The configurations, each with a stable id. Called on the leader only, once per renewal
    /// (so it should be cheap; cache what is expensive). An error keeps the previous list.
    async fn get_config(&self) -> Result<Vec<InstanceConfig>, plume::Error>;

    /// Start an instance of `config`. `fencing` grows with every grant of any configuration
    /// of the set: an instance that writes somewhere can pass it along, and the receiver can
    /// refuse a token lower than the last one it saw. An error is retried after `renew`, then
    /// twice as long, …; after [`Settings::create_failures`](crate::Settings) in a row this
    /// node gives the configuration up for `refuse_for`, and it moves to another node.
    async fn create_instance(
        &self,
        config: &InstanceConfig,
        fencing: u64,
    ) -> Result<Self::Instance, plume::Error>;

    /// Check an instance; an error means unhealthy: it is disconnected and created again while
    /// this node holds its lease. The default says healthy.
    async fn healthcheck_instance(&self, _instance: &Self::Instance) -> Result<(), plume::Error> {
        Ok(())
    }

    /// Stop an instance: on every stop (moved, removed, unhealthy, lease lost, shutdown). It
    /// should return quickly: the lease's drift margin covers the time it takes.
    async fn disconnect_instance(&self, _instance: Self::Instance) {}
}
