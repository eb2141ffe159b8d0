//! Plume nodes in a feathers-distributed fleet.
//!
//! [feathers-distributed](https://github.com/kalisio/feathers-distributed) 3.0 links Node
//! Feathers apps over [cote](https://github.com/dashersw/cote) 1.2: UDP hello datagrams for
//! discovery, axon req/rep and pub/sub over AMP frames for calls and events. This crate speaks
//! those protocols so a Plume App can provide services to a Node gateway, and mount a Node
//! app's services as proxies (`docs/cote.md`).
//!
//! Layers, each using only those before it: the codecs ([`amp`], [`hello`], [`fd`]) ← the
//! sockets ([`discovery`], [`axon`]) ← the node ([`CoteNode`]), which joins an App to the fleet.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plume_cote::{CoteConfig, CoteNode};
//!
//! let app = plume::App::new();
//! // … app.use_service("todos", …), app.listen(…) …
//! let mut config = CoteConfig::from_env()?; // COTE_* timers, PLUME_KEY, PLUME_COTE_*
//! config.key = "todos".into(); // feathers-distributed's `key`
//! let node = CoteNode::start(&app, config).await?; // keep it while the App serves
//! # drop(node);
//! # Ok(())
//! # }
//! ```

pub mod amp;
pub mod axon;
pub mod config;
pub mod discovery;
pub mod fd;
pub mod hello;
mod node;
mod proxy;

pub use config::{ConfigError, CoteConfig};
pub use node::{CoteError, CoteNode};
