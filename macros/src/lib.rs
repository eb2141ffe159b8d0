//! The `#[service]` attribute for Plume. Use it through `plume::service`, which documents it.
//!
//! The macro works in three steps: `parse` reads the attribute and the `impl` block into an
//! IR, collecting every problem with its span; `expand` turns the validated IR into the
//! `plume::Service` impl, the typed client and the registration. Generated code names only
//! absolute paths (`::core`, `::std` and the `plume` crate, `::plume` unless `crate = ..` says
//! otherwise).

mod errors;
mod expand;
mod openapi;
mod parse;

use proc_macro::TokenStream;

/// Implements `plume::Service` for the type of an inherent `impl` block of typed `async`
/// methods, generates a typed `<Type>Client`, and with `path = "..."` registers the service.
///
/// See `plume::service` for the full documentation and examples.
#[proc_macro_attribute]
pub fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::service(args.into(), item.into()).into()
}
