//! The `Service::schema` method `#[service]` generates: the JSON Schemas of each method's id,
//! data and result for the API docs, from the types in the signatures.
//!
//! Every type is asked through `plume::docs::Probe` (autoref specialization): a type that
//! implements `schemars::JsonSchema` gives its schema, any other type gives none, so a service
//! whose types do not derive `JsonSchema` compiles as before and is documented as "any JSON".

use proc_macro2::TokenStream;
use quote::quote;
use syn::{ImplItem, Type};

use crate::parse::{Args, Method, Service, first_type_arg};

/// `fn schema(&self) -> Option<ServiceSchema>` for the `Service` impl.
pub(crate) fn schema_fn(krate: &TokenStream, args: &Args, svc: &Service) -> TokenStream {
    let docs = quote!(#krate::__private::docs);
    let probe = |ty: &Type| quote!((&&#docs::Probe::<#ty>::new()).schema_in(&mut __gen));
    let methods = svc.methods.iter().map(|m| {
        let name = &m.name;
        let mut sets = TokenStream::new();
        if let Some(ty) = &m.id_ty {
            let (inner, multi) = match option_inner(ty) {
                Some(inner) => (inner, true),
                None => (ty, false),
            };
            let id = probe(inner);
            sets.extend(quote! { __m.id = #id; __m.multi = #multi; });
        }
        if let Some(ty) = &m.data_ty {
            let data = probe(ty);
            sets.extend(quote! { __m.data = #data; });
        }
        let result = probe(&m.ok_ty);
        sets.extend(quote! { __m.result = #result; });
        if let Some(doc) = doc_of(svc, m) {
            sets.extend(quote! {
                __m.description = ::core::option::Option::Some(
                    <::std::string::String as ::core::convert::From<&str>>::from(#doc),
                );
            });
        }
        quote! {{
            let mut __m = #docs::MethodSchema::new(#name);
            #sets
            __methods.push(__m);
        }}
    });
    let record = match &args.record {
        Some(ty) => probe(ty),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        fn schema(&self) -> ::core::option::Option<#docs::ServiceSchema> {
            #[allow(unused_imports)]
            use #docs::{ViaAny as _, ViaSchema as _};
            let mut __gen = #docs::generator();
            let mut __methods = ::std::vec::Vec::new();
            #(#methods)*
            let __record = #record;
            ::core::option::Option::Some(
                #docs::ServiceSchema::from_generator(__methods, __record, &mut __gen),
            )
        }
    }
}

/// `T` of `Option<T>` (any path ending in `Option`).
fn option_inner(ty: &Type) -> Option<&Type> {
    first_type_arg(ty, "Option")
}

/// The doc comment of the method, lines joined, when it has one.
fn doc_of(svc: &Service, m: &Method) -> Option<String> {
    let f = svc.item.items.iter().find_map(|item| match item {
        ImplItem::Fn(f) if f.sig.ident == m.ident => Some(f),
        _ => None,
    })?;
    let lines: Vec<String> = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let text = lines.join("\n").trim().to_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_ids_are_unwrapped_and_others_kept() {
        let ty: Type = syn::parse_quote!(Option<i64>);
        let inner = option_inner(&ty).map(|t| quote!(#t).to_string());
        assert_eq!(inner.as_deref(), Some("i64"));
        let ty: Type = syn::parse_quote!(String);
        assert!(option_inner(&ty).is_none());
    }
}
