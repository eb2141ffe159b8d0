//! The Feathers-style path: `app.configure(Distribution::new())`, then the handle from
//! `app.distribution().await`, and a failed start surfacing from `app.setup()`.

use plume::hooks::BoxFuture;
use plume::{App, Error};
use tokio::sync::watch;

use super::{Distribution, DistributionError, DistributionHandle};

/// The outcome of a start spawned by `configure`.
pub(super) type Outcome = watch::Receiver<Option<Result<DistributionHandle, DistributionError>>>;

/// The distribution plugin's handle from the App it was configured on.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use plume::App;
/// use plume_transport::distribution::{AppDistributionExt, Distribution};
///
/// let app = App::new();
/// app.configure(Distribution::new().key("todos"));
/// let dist = app.distribution().await?; // the handle, or why the plugin did not start
/// # let _ = dist;
/// # Ok(()) }
/// ```
pub trait AppDistributionExt {
    /// Wait for the plugin applied with `app.configure(..)` (or started with
    /// [`Distribution::start`]) to start; its handle, or the error of its start
    /// ([`DistributionError::NotConfigured`] on an App without the plugin).
    fn distribution(&self) -> BoxFuture<'_, Result<DistributionHandle, DistributionError>>;
}

impl AppDistributionExt for App {
    fn distribution(&self) -> BoxFuture<'_, Result<DistributionHandle, DistributionError>> {
        Box::pin(async move {
            match DistributionHandle::of(self) {
                Some(handle) => Ok(handle),
                None => Distribution::ready(self).await,
            }
        })
    }
}

/// The setup task `configure` registers: wait for the start; a failure is the App's setup
/// error (`Unavailable`, naming the cause).
pub(super) fn setup_task(
    mut outcome: Outcome,
) -> impl FnOnce() -> BoxFuture<'static, plume::Result<()>> + Send + 'static {
    move || {
        Box::pin(async move {
            let started = outcome.wait_for(Option::is_some).await.map(|o| o.clone());
            match started {
                Ok(Some(Ok(_))) => Ok(()),
                Ok(Some(Err(e))) => Err(Error::unavailable(format!(
                    "the distribution plugin did not start: {e}"
                ))),
                _ => Err(Error::unavailable(
                    "the distribution plugin stopped before it started",
                )),
            }
        })
    }
}
