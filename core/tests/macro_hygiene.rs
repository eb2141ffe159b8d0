//! `#[service]` expands to absolute paths only: it compiles inside a `#[no_implicit_prelude]`
//! module, with the crate renamed, next to items that shadow the prelude's names, and with a
//! raw-identifier method name.

extern crate plume as renamed_plume;

#[no_implicit_prelude]
mod hygiene {
    // Shadow names that generated code must not pick up.
    #[allow(dead_code)]
    struct Box;
    #[allow(dead_code)]
    struct Vec;
    #[allow(dead_code)]
    struct String;
    #[allow(dead_code)]
    struct Option;
    #[allow(dead_code)]
    struct Value;
    #[allow(dead_code)]
    struct Params;
    #[allow(dead_code)]
    mod serde_json {}

    #[derive(::core::default::Default, ::core::fmt::Debug)]
    pub(crate) struct Shadowed;

    #[::renamed_plume::service(crate = ::renamed_plume, path = "hygiene", events = ["pinged"])]
    impl Shadowed {
        async fn get(
            &self,
            id: ::std::string::String,
            params: ::renamed_plume::Params,
        ) -> ::renamed_plume::Result<::std::vec::Vec<::std::string::String>> {
            let _ = params;
            ::core::result::Result::Ok(::std::vec![id])
        }

        async fn remove(
            &self,
            id: ::core::option::Option<i64>,
        ) -> ::core::result::Result<::core::option::Option<i64>, ::renamed_plume::Error> {
            ::core::result::Result::Ok(id)
        }

        #[method]
        async fn r#type(&self, data: u8) -> ::renamed_plume::Result<u8> {
            ::core::result::Result::Ok(data)
        }
    }
}

use hygiene::{Shadowed, ShadowedClient};
use renamed_plume::{App, Id, Method, Params, Service};
use serde_json::json;

#[tokio::test]
async fn expands_without_the_prelude_and_with_a_renamed_crate() {
    assert_eq!(
        Shadowed.methods(),
        vec![Method::Get, Method::Remove, Method::Custom("type".into())]
    );
    let app = App::new();
    let client = ShadowedClient::new(app.use_service("h", Shadowed));
    assert_eq!(
        client.get("a".into(), Params::new()).await.unwrap(),
        vec!["a".to_owned()]
    );
    assert_eq!(client.remove(Some(4)).await.unwrap(), Some(4));
    assert_eq!(client.remove(None).await.unwrap(), None);
    assert_eq!(client.r#type(7).await.unwrap(), 7);
    let handle = client.handle();
    assert_eq!(
        handle.call("type", json!(3), Params::new()).await.unwrap(),
        json!(3)
    );
    assert_eq!(
        handle.get(Id::Int(5), Params::new()).await.unwrap(),
        json!(["5"])
    );
    assert!(
        renamed_plume::registry::registered()
            .iter()
            .any(|r| r.path == "hygiene")
    );
}
