//! Typed clients by type: `app.client::<TodosClient>()`.

use crate::app::App;
use crate::error::Result;
use crate::handle::ServiceHandle;

/// A typed client of a service mounted at a known path: what `#[service(path = "..")]`
/// generates for its `<Type>Client`, so that [`App::client`] finds the service by the client's
/// type alone.
///
/// ```
/// use plume::{App, Id, Params, Result};
///
/// #[derive(Default)]
/// struct Greeter;
///
/// #[plume::service(path = "greetings")]
/// impl Greeter {
///     async fn get(&self, id: Id, _params: Params) -> Result<String> {
///         Ok(format!("hello {id}"))
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let app = App::with_registered();
/// let greetings = app.client::<GreeterClient>()?;
/// assert_eq!(greetings.get(Id::from("world"), Params::new()).await?, "hello world");
/// # Ok::<_, plume::Error>(())
/// # }).unwrap();
/// ```
pub trait ServiceClient: Sized {
    /// The path the service is registered at (`path = ".."` of `#[service]`).
    const PATH: &'static str;

    /// The client of the service behind `handle`.
    fn from_handle(handle: ServiceHandle) -> Self;
}

impl App {
    /// The typed client `C` of the service at `C::PATH` (see [`ServiceClient`]), or a NotFound
    /// error `Service '<path>' not found` when nothing is mounted there.
    pub fn client<C: ServiceClient>(&self) -> Result<C> {
        self.require(C::PATH).map(C::from_handle)
    }
}
