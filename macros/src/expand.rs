//! Turn the validated IR into code: the `Service` impl, the typed client and the registration.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{ItemImpl, Type};

use crate::errors::Errors;
use crate::parse::{Args, Kind, Method, Service};

/// The whole expansion: parse, validate, generate. Errors come back as `compile_error!`s next to
/// the user's block (re-emitted without our attributes, to limit follow-on errors).
pub(crate) fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = Args::parse(args, &mut errors);
    let item: ItemImpl = match syn::parse2(item) {
        Ok(item) => item,
        Err(err) => {
            errors.push(err);
            return errors
                .combined()
                .map(|e| e.to_compile_error())
                .unwrap_or_default();
        }
    };
    let fallback = item.clone();
    let parsed = Service::parse(item, &mut errors);
    let output = match (errors.combined(), parsed) {
        (None, Some(svc)) => Expand {
            krate: krate(&args),
            args: &args,
            svc: &svc,
        }
        .into_token_stream(),
        (Some(err), Some(svc)) => {
            let mut out = svc.item.into_token_stream();
            out.extend(err.to_compile_error());
            out
        }
        (err, None) => {
            let mut out = strip_marks(fallback);
            out.extend(err.map(|e| e.to_compile_error()));
            out
        }
    };
    if std::env::var_os("PLUME_MACROS_DEBUG").is_some_and(|v| v == "1") {
        eprintln!("{output}");
    }
    output
}

/// The user's block with every `#[method]` attribute removed (used when the block could not be
/// read as a service at all).
fn strip_marks(mut item: ItemImpl) -> TokenStream {
    for impl_item in &mut item.items {
        if let syn::ImplItem::Fn(f) = impl_item {
            f.attrs.retain(|a| !a.path().is_ident("method"));
        }
    }
    item.into_token_stream()
}

/// The path of the `plume` crate.
fn krate(args: &Args) -> TokenStream {
    match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::plume),
    }
}

/// The generator: one method per output item.
struct Expand<'a> {
    krate: TokenStream,
    args: &'a Args,
    svc: &'a Service,
}

impl ToTokens for Expand<'_> {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.svc.item.to_tokens(tokens);
        let service_impl = self.service_impl();
        let registration = self.registration();
        tokens.extend(quote! {
            const _: () = {
                #service_impl
                #registration
            };
        });
        tokens.extend(self.client());
        tokens.extend(self.client_path());
    }
}

impl Expand<'_> {
    /// `Pin<Box<dyn Future<Output = Result<Value>> + Send + 'async_trait>>`: the trait is
    /// declared with `async_trait`, whose expansion names `Box` unqualified; writing the boxed
    /// signatures out keeps the generated code free of relative paths.
    fn boxed_future(&self) -> TokenStream {
        let krate = &self.krate;
        quote! {
            ::core::pin::Pin<::std::boxed::Box<
                dyn ::core::future::Future<
                    Output = #krate::Result<#krate::__private::serde_json::Value>
                > + ::core::marker::Send + 'async_trait
            >>
        }
    }

    fn service_impl(&self) -> TokenStream {
        let krate = &self.krate;
        let self_ty = &self.svc.item.self_ty;
        let value = quote!(#krate::__private::serde_json::Value);
        let params_ty = quote!(#krate::Params);
        let id_ty = quote!(#krate::Id);
        let fut = self.boxed_future();

        let mut fns = TokenStream::new();
        let mut customs = Vec::new();
        for m in &self.svc.methods {
            let (trait_args, conversions) = match m.kind {
                Kind::Find => (quote!(), quote!()),
                Kind::Get => (quote!(id: #id_ty,), self.convert_id(m, false)),
                Kind::Remove => (
                    quote!(id: ::core::option::Option<#id_ty>,),
                    self.convert_id(m, true),
                ),
                Kind::Create => (quote!(data: #value,), self.convert_data(m)),
                Kind::Update => {
                    let (id, data) = (self.convert_id(m, false), self.convert_data(m));
                    (quote!(id: #id_ty, data: #value,), quote!(#id #data))
                }
                Kind::Patch => {
                    let (id, data) = (self.convert_id(m, true), self.convert_data(m));
                    (
                        quote!(id: ::core::option::Option<#id_ty>, data: #value,),
                        quote!(#id #data),
                    )
                }
                Kind::Custom { .. } => {
                    customs.push(m);
                    continue;
                }
            };
            let name = &m.ident;
            let call = self.call_user(m);
            fns.extend(quote! {
                fn #name<'life0, 'async_trait>(
                    &'life0 self,
                    #trait_args
                    params: #params_ty,
                ) -> #fut
                where
                    'life0: 'async_trait,
                    Self: 'async_trait,
                {
                    ::std::boxed::Box::pin(async move {
                        #conversions
                        #call
                    })
                }
            });
        }

        if !customs.is_empty() {
            let arms = customs.iter().map(|m| {
                let name = &m.name;
                let conversion = self.convert_data(m);
                let call = self.call_user(m);
                quote! { #name => { #conversion #call } }
            });
            fns.extend(quote! {
                fn call<'life0, 'life1, 'async_trait>(
                    &'life0 self,
                    method: &'life1 str,
                    data: #value,
                    params: #params_ty,
                ) -> #fut
                where
                    'life0: 'async_trait,
                    'life1: 'async_trait,
                    Self: 'async_trait,
                {
                    ::std::boxed::Box::pin(async move {
                        match method {
                            #(#arms)*
                            _ => {
                                let _ = (data, params);
                                ::core::result::Result::Err(
                                    #krate::__private::unknown_method(method),
                                )
                            }
                        }
                    })
                }
            });
        }

        let methods = self.svc.methods.iter().map(|m| {
            let variant = match m.kind {
                Kind::Find => quote!(Find),
                Kind::Get => quote!(Get),
                Kind::Create => quote!(Create),
                Kind::Update => quote!(Update),
                Kind::Patch => quote!(Patch),
                Kind::Remove => quote!(Remove),
                Kind::Custom { .. } => {
                    let name = &m.name;
                    quote!(Custom(<::std::string::String as ::core::convert::From<&str>>::from(#name)))
                }
            };
            quote!(#krate::Method::#variant)
        });
        fns.extend(quote! {
            fn methods(&self) -> ::std::vec::Vec<#krate::Method> {
                ::std::vec![#(#methods),*]
            }
        });

        if !self.args.events.is_empty() {
            let events = &self.args.events;
            fns.extend(quote! {
                fn events(&self) -> ::std::vec::Vec<::std::string::String> {
                    ::std::vec![#(<::std::string::String as ::core::convert::From<&str>>::from(#events)),*]
                }
            });
        }

        let idempotent: Vec<&str> = self
            .svc
            .methods
            .iter()
            .filter(|m| matches!(m.kind, Kind::Custom { idempotent: true }))
            .map(|m| m.name.as_str())
            .collect();
        if !idempotent.is_empty() {
            fns.extend(quote! {
                fn options(&self) -> #value {
                    #krate::__private::serde_json::json!({ "idempotentMethods": [#(#idempotent),*] })
                }
            });
        }

        fns.extend(crate::openapi::schema_fn(krate, self.args, self.svc));

        quote! {
            #[automatically_derived]
            impl #krate::Service for #self_ty {
                #fns
            }
        }
    }

    /// `let __id: T = from_id(id)?;` (or `from_opt_id` for patch and remove).
    fn convert_id(&self, m: &Method, optional: bool) -> TokenStream {
        let krate = &self.krate;
        let Some(ty) = &m.id_ty else { return quote!() };
        let name = &m.name;
        let span = span_of(ty);
        if optional {
            quote_spanned! {span=>
                let __id = #krate::__private::from_opt_id::<#ty>(id, #name)?;
            }
        } else {
            quote_spanned! {span=>
                let __id = #krate::__private::from_id::<#ty>(id)?;
            }
        }
    }

    /// `let __data: D = from_data(data)?;`
    fn convert_data(&self, m: &Method) -> TokenStream {
        let krate = &self.krate;
        let Some(ty) = &m.data_ty else {
            return quote!();
        };
        let span = span_of(ty);
        quote_spanned! {span=>
            let __data = #krate::__private::from_data::<#ty>(data)?;
        }
    }

    /// Call the user's method with the converted arguments and serialize its result.
    fn call_user(&self, m: &Method) -> TokenStream {
        let krate = &self.krate;
        let self_ty = &self.svc.item.self_ty;
        let name = &m.ident;
        let id = m.id_ty.as_ref().map(|_| quote!(__id,));
        let data = m.data_ty.as_ref().map(|_| quote!(__data,));
        let (drop_params, params) = if m.has_params {
            (quote!(), quote!(params))
        } else {
            (quote!(let _ = params;), quote!())
        };
        quote! {
            #drop_params
            let __out = <#self_ty>::#name(self, #id #data #params).await?;
            // A `Value` result as it is; any other serialized (see `Out`).
            {
                #[allow(unused_imports)]
                use #krate::__private::{ResultJson as _, SerializeJson as _};
                (&mut #krate::__private::Out(::core::option::Option::Some(__out))).json()
            }
        }
    }

    /// The linkme registration, when `path = ".."` is given.
    fn registration(&self) -> TokenStream {
        let Some(path) = &self.args.path else {
            return quote!();
        };
        let krate = &self.krate;
        let self_ty = &self.svc.item.self_ty;
        let type_name = self_ty.to_token_stream().to_string();
        let make = quote_spanned! {path.span()=>
            <#self_ty as #krate::__private::RegisterDefault>::make
        };
        quote! {
            #[#krate::__private::linkme::distributed_slice(#krate::__private::SERVICES)]
            #[linkme(crate = #krate::__private::linkme)]
            static __PLUME_SERVICE: #krate::__private::ServiceRegistration =
                #krate::__private::ServiceRegistration {
                    path: #path,
                    type_name: #type_name,
                    make: #make,
                };
        }
    }

    /// The typed client `<Type>Client` over a `ServiceHandle`.
    fn client(&self) -> TokenStream {
        let krate = &self.krate;
        let self_ident = &self.svc.ident;
        let client = format_ident!("{}Client", self_ident);
        let vis = match &self.args.vis {
            Some(vis) => vis.to_token_stream(),
            None => quote!(pub),
        };
        let handle_ty = quote!(#krate::ServiceHandle);
        let doc = format!(
            "A typed client for the `{self_ident}` service, generated by `#[service]`.\n\n\
             It wraps a `ServiceHandle` (from `App::use_service` or `App::service`) and has the \
             service's typed methods: arguments are serialized, results deserialized, and every \
             call runs through the App's hooks."
        );
        let client_name = client.to_string();
        let methods = self.svc.methods.iter().map(|m| self.client_method(m, &vis));
        quote! {
            #[doc = #doc]
            #[derive(::core::clone::Clone)]
            #vis struct #client {
                handle: #handle_ty,
            }

            #[automatically_derived]
            impl ::core::fmt::Debug for #client {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.debug_struct(#client_name).finish_non_exhaustive()
                }
            }

            impl #client {
                /// A client that calls the service behind `handle`.
                #vis fn new(handle: #handle_ty) -> Self {
                    Self { handle }
                }

                /// The untyped handle this client calls through.
                #vis fn handle(&self) -> &#handle_ty {
                    &self.handle
                }

                #(#methods)*
            }
        }
    }

    /// With `path = ".."`: the client knows its service's path, so `app.client::<TypeClient>()`
    /// finds it (`ServiceClient`).
    fn client_path(&self) -> TokenStream {
        let Some(path) = &self.args.path else {
            return quote!();
        };
        let krate = &self.krate;
        let client = format_ident!("{}Client", self.svc.ident);
        quote! {
            #[automatically_derived]
            impl #krate::ServiceClient for #client {
                const PATH: &'static str = #path;
                fn from_handle(handle: #krate::ServiceHandle) -> Self {
                    Self::new(handle)
                }
            }
        }
    }

    fn client_method(&self, m: &Method, vis: &TokenStream) -> TokenStream {
        let krate = &self.krate;
        let name = &m.ident;
        let ok_ty = &m.ok_ty;
        let wire = &m.name;
        let id_arg = m.id_ty.as_ref().map(|ty| quote!(id: #ty,));
        let data_arg = m.data_ty.as_ref().map(|ty| quote!(data: #ty,));
        let (params_arg, params) = if m.has_params {
            (quote!(params: #krate::Params), quote!(params))
        } else {
            (
                quote!(),
                quote!(<#krate::Params as ::core::default::Default>::default()),
            )
        };
        let to_id = quote!(#krate::__private::to_id(id)?);
        let to_opt_id = quote!(#krate::__private::to_opt_id(id)?);
        let to_data = quote!(#krate::__private::to_data(data)?);
        let call = match m.kind {
            Kind::Find => quote!(find(#params)),
            Kind::Get => quote!(get(#to_id, #params)),
            Kind::Create => quote!(create(#to_data, #params)),
            Kind::Update => quote!(update(#to_id, #to_data, #params)),
            Kind::Patch => quote!(patch(#to_opt_id, #to_data, #params)),
            Kind::Remove => quote!(remove(#to_opt_id, #params)),
            Kind::Custom { .. } => quote!(call(#wire, #to_data, #params)),
        };
        let doc = format!(
            "Calls `{wire}` on the service and reads the result as the service returns it."
        );
        quote! {
            #[doc = #doc]
            #vis async fn #name(&self, #id_arg #data_arg #params_arg) -> #krate::Result<#ok_ty> {
                let __value = self.handle.#call.await?;
                #krate::__private::from_result::<#ok_ty>(__value)
            }
        }
    }
}

/// The span of a type's first token, so trait-bound errors point at the user's type.
fn span_of(ty: &Type) -> Span {
    ty.to_token_stream()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        service(args, item).to_string()
    }

    fn todos() -> TokenStream {
        quote! {
            impl Todos {
                async fn find(&self, params: Params) -> Result<Vec<Todo>> { todo!() }
                async fn get(&self, id: i64) -> Result<Todo> { todo!() }
                #[method(idempotent)]
                async fn archive(&self, data: Archive, params: Params) -> Result<u32> { todo!() }
            }
        }
    }

    #[test]
    fn renamed_crate_is_used_everywhere() {
        let out = expand(quote!(crate = ::renamed, path = "todos"), todos());
        assert!(out.contains(":: renamed :: Service for Todos"), "{out}");
        assert!(out.contains(":: renamed :: __private :: SERVICES"), "{out}");
        assert!(!out.contains("plume"), "{out}");
    }

    #[test]
    fn default_expansion_is_absolute_and_complete() {
        let out = expand(quote!(path = "todos", events = ["archived"]), todos());
        // The user's block comes back without our attribute.
        assert!(!out.contains("# [method"), "{out}");
        assert!(out.contains("impl :: plume :: Service for Todos"), "{out}");
        assert!(out.contains("const _ : () ="), "{out}");
        assert!(out.contains("distributed_slice"), "{out}");
        assert!(out.contains("pub struct TodosClient"), "{out}");
        assert!(out.contains("\"archive\" =>"), "{out}");
        assert!(out.contains("\"idempotentMethods\""), "{out}");
        assert!(out.contains("fn events"), "{out}");
        // Standard methods it does not define keep the trait default.
        assert!(!out.contains("fn update"), "{out}");
        // No unqualified std names.
        for name in [
            "Box", "Vec", "String", "Ok", "Err", "Some", "None", "Default", "From",
        ] {
            let qualified = out.replace(&format!(":: {name}"), "");
            for bare in [format!(" {name} ::"), format!(" {name} (")] {
                assert!(!qualified.contains(&bare), "`{bare}` in {out}");
            }
        }
    }

    #[test]
    fn without_path_nothing_is_registered_and_vis_applies() {
        let out = expand(quote!(vis = pub(crate)), todos());
        assert!(!out.contains("distributed_slice"), "{out}");
        assert!(!out.contains("fn events"), "{out}");
        assert!(out.contains("pub (crate) struct TodosClient"), "{out}");
    }

    #[test]
    fn every_error_is_reported_together() {
        let item = quote! {
            impl Todos {
                fn find(&self) -> Result<()> { todo!() }
                async fn get(self, id: Id) -> Result<()> { todo!() }
                async fn helper(&self) -> Result<()> { todo!() }
                #[method] async fn create(&self, data: D) -> Result<()> { todo!() }
                async fn update(&self) -> Result<()> { todo!() }
                #[method] async fn new(&self, data: D) -> Result<()> { todo!() }
                #[method(fast)] async fn go(&self, data: D) -> Result<()> { todo!() }
                async fn remove(&self, id: Option<Id>) -> () {}
            }
        };
        let out = expand(quote!(nope = 1, crate = a, crate = b), item);
        let errors = out.matches("compile_error").count();
        assert_eq!(errors, 10, "{out}");
        // The user's block is still emitted (to limit follow-on errors), without a Service impl.
        assert!(out.contains("impl Todos"), "{out}");
        assert!(!out.contains("Service for"), "{out}");
    }

    #[test]
    fn impl_level_problems_are_reported() {
        let out = expand(
            quote!(),
            quote!(
                impl<T> Trait for Wrapper<T> {}
            ),
        );
        assert_eq!(out.matches("compile_error").count(), 2, "{out}");
        let out = expand(
            quote!(),
            quote!(
                impl (A, B) {}
            ),
        );
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
        let out = expand(
            quote!(),
            quote!(
                struct NotAnImpl;
            ),
        );
        assert_eq!(out.matches("compile_error").count(), 1, "{out}");
    }
}
