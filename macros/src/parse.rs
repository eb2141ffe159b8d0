//! Parse the attribute and the `impl` block into the IR, validating as we go.
//!
//! Nothing here stops at the first problem: every error is recorded in [`Errors`] with its span,
//! and the caller reports them all at once.

use std::collections::HashSet;

use proc_macro2::{Ident, Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{
    Attribute, FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, LitStr, PathArguments,
    ReturnType, Token, Type, Visibility,
};

use crate::errors::Errors;

/// The attribute's arguments: `path = "..."`, `events = [..]`, `crate = path`, `vis = ..`.
#[derive(Default)]
pub(crate) struct Args {
    /// Where to register the service, if anywhere.
    pub(crate) path: Option<LitStr>,
    /// The custom events the service declares.
    pub(crate) events: Vec<LitStr>,
    /// The path of the `plume` crate (`::plume` unless renamed).
    pub(crate) krate: Option<syn::Path>,
    /// The visibility of the generated client (`pub` unless given).
    pub(crate) vis: Option<Visibility>,
    /// The type of one record, for the API docs (`record = Todo`).
    pub(crate) record: Option<Type>,
}

mod kw {
    syn::custom_keyword!(path);
    syn::custom_keyword!(events);
    syn::custom_keyword!(vis);
    syn::custom_keyword!(idempotent);
    syn::custom_keyword!(record);
}

/// The keys the attribute accepts, for error messages.
const KEYS: &str = "`path`, `events`, `crate`, `vis` or `record`";

impl Args {
    /// Parse the attribute's arguments, recording problems in `errors` and going on with the next
    /// key, so an unknown key does not hide problems in the `impl` block.
    pub(crate) fn parse(tokens: TokenStream, errors: &mut Errors) -> Args {
        let mut args = Args::default();
        let parser = |input: ParseStream<'_>| {
            while !input.is_empty() {
                if let Err(err) = args.parse_one(input) {
                    errors.push(err);
                    // Skip to the next key.
                    while !input.is_empty() && !input.peek(Token![,]) {
                        input.parse::<proc_macro2::TokenTree>()?;
                    }
                }
                if input.is_empty() {
                    break;
                }
                input.parse::<Token![,]>()?;
            }
            Ok(())
        };
        if let Err(err) = parser.parse2(tokens) {
            errors.push(err);
        }
        args
    }

    fn parse_one(&mut self, input: ParseStream<'_>) -> syn::Result<()> {
        let look = input.lookahead1();
        if look.peek(kw::path) {
            let key = input.parse::<kw::path>()?;
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse()?;
            if lit.value().trim_matches('/').is_empty() {
                return Err(syn::Error::new(
                    lit.span(),
                    "the service path must not be empty",
                ));
            }
            set_once(&mut self.path, lit, key.span, "path")
        } else if look.peek(kw::events) {
            let key = input.parse::<kw::events>()?;
            input.parse::<Token![=]>()?;
            let content;
            syn::bracketed!(content in input);
            let list = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
            if !self.events.is_empty() {
                return Err(syn::Error::new(key.span, "duplicate key `events`"));
            }
            let mut seen = HashSet::new();
            for event in list {
                if !seen.insert(event.value()) {
                    return Err(syn::Error::new(event.span(), "duplicate event"));
                }
                self.events.push(event);
            }
            Ok(())
        } else if look.peek(Token![crate]) {
            let key = input.parse::<Token![crate]>()?;
            input.parse::<Token![=]>()?;
            let path = input.call(syn::Path::parse_mod_style)?;
            set_once(&mut self.krate, path, key.span, "crate")
        } else if look.peek(kw::vis) {
            let key = input.parse::<kw::vis>()?;
            input.parse::<Token![=]>()?;
            let vis: Visibility = input.parse()?;
            set_once(&mut self.vis, vis, key.span, "vis")
        } else if look.peek(kw::record) {
            let key = input.parse::<kw::record>()?;
            input.parse::<Token![=]>()?;
            let ty: Type = input.parse()?;
            set_once(&mut self.record, ty, key.span, "record")
        } else if input.peek(syn::Ident::peek_any) {
            let key = input.call(Ident::parse_any)?;
            Err(syn::Error::new(
                key.span(),
                format!("unknown key `{key}`; expected {KEYS}"),
            ))
        } else {
            Err(look.error())
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, key: Span, name: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(key, format!("duplicate key `{name}`")));
    }
    *slot = Some(value);
    Ok(())
}

/// A standard method, or a custom one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `find(params)`
    Find,
    /// `get(id, params)`
    Get,
    /// `create(data, params)`
    Create,
    /// `update(id, data, params)`
    Update,
    /// `patch(id, data, params)` with an optional id
    Patch,
    /// `remove(id, params)` with an optional id
    Remove,
    /// `name(data, params)`, marked `#[method]`
    Custom {
        /// Marked `#[method(idempotent)]`: may be retried on another provider.
        idempotent: bool,
    },
}

impl Kind {
    fn standard(name: &str) -> Option<Kind> {
        Some(match name {
            "find" => Kind::Find,
            "get" => Kind::Get,
            "create" => Kind::Create,
            "update" => Kind::Update,
            "patch" => Kind::Patch,
            "remove" => Kind::Remove,
            _ => return None,
        })
    }

    /// Whether the method takes an id and data (besides the optional params).
    fn shape(self) -> (bool, bool) {
        match self {
            Kind::Find => (false, false),
            Kind::Get | Kind::Remove => (true, false),
            Kind::Create | Kind::Custom { .. } => (false, true),
            Kind::Update | Kind::Patch => (true, true),
        }
    }

    /// The expected argument list, for error messages.
    fn usage(self) -> &'static str {
        match self.shape() {
            (false, false) => "(&self, params)",
            (true, false) => "(&self, id, params)",
            (false, true) => "(&self, data, params)",
            (true, true) => "(&self, id, data, params)",
        }
    }
}

/// One method of the service, validated.
pub(crate) struct Method {
    /// The method's name as written (possibly raw).
    pub(crate) ident: Ident,
    /// Its name on the wire (`r#type` is `"type"`).
    pub(crate) name: String,
    /// Standard or custom.
    pub(crate) kind: Kind,
    /// The id argument's type, for methods that take one.
    pub(crate) id_ty: Option<Type>,
    /// The data argument's type, for methods that take one.
    pub(crate) data_ty: Option<Type>,
    /// Whether the method takes `params` last.
    pub(crate) has_params: bool,
    /// `T` of the `Result<T>` the method returns.
    pub(crate) ok_ty: Type,
}

/// The `impl` block, validated.
pub(crate) struct Service {
    /// The user's block, minus our `#[method]` attributes.
    pub(crate) item: ItemImpl,
    /// The last segment of the type's path, which names the client.
    pub(crate) ident: Ident,
    /// The methods, in source order.
    pub(crate) methods: Vec<Method>,
}

/// Names the generated client defines itself; custom methods may not use them.
const CLIENT_NAMES: [&str; 2] = ["new", "handle"];

/// The names a custom method may not take, for error messages.
const STANDARD: &str = "find, get, create, update, patch, remove";

impl Service {
    /// Read the `impl` block. `#[method]` attributes are removed from `item` even when there are
    /// errors, so the block can be re-emitted as it was written.
    pub(crate) fn parse(mut item: ItemImpl, errors: &mut Errors) -> Option<Service> {
        if let Some((_, path, _)) = &item.trait_ {
            errors.spanned(
                path,
                "`#[service]` goes on an inherent `impl` block, not a trait impl",
            );
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.spanned(
                &item.generics,
                "`#[service]` does not support generic services",
            );
        }
        let ident = match &*item.self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
            _ => None,
        };
        if ident.is_none() {
            errors.spanned(
                &item.self_ty,
                "`#[service]` needs a named type, like `impl Todos`",
            );
        }

        let mut methods = Vec::new();
        let mut seen = HashSet::new();
        for impl_item in &mut item.items {
            let ImplItem::Fn(f) = impl_item else {
                let attrs = match impl_item {
                    ImplItem::Const(c) => &mut c.attrs,
                    ImplItem::Type(t) => &mut t.attrs,
                    ImplItem::Macro(m) => &mut m.attrs,
                    _ => continue,
                };
                for attr in take_method_attrs(attrs) {
                    errors.spanned(attr, "`#[method]` goes on a method");
                }
                continue;
            };
            let marks = take_method_attrs(&mut f.attrs);
            let name = f.sig.ident.unraw().to_string();
            if !seen.insert(name.clone()) {
                errors.spanned(&f.sig.ident, format!("duplicate method `{name}`"));
            }
            if let Some(method) = parse_method(f, name, &marks, errors) {
                methods.push(method);
            }
        }
        Some(Service {
            item,
            ident: ident?,
            methods,
        })
    }
}

/// Remove and return the `#[method]` / `#[method(..)]` attributes.
fn take_method_attrs(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (ours, rest) = std::mem::take(attrs)
        .into_iter()
        .partition(|a| a.path().is_ident("method"));
    *attrs = rest;
    ours
}

fn parse_method(
    f: &ImplItemFn,
    name: String,
    marks: &[Attribute],
    errors: &mut Errors,
) -> Option<Method> {
    let sig = &f.sig;
    let before = errors.len();

    // What kind of method: standard by name, or custom by `#[method]`.
    let kind = match (Kind::standard(&name), marks) {
        (Some(kind), []) => kind,
        (Some(kind), [mark, ..]) => {
            errors.spanned(
                mark,
                format!("`{name}` is a standard service method; remove `#[method]`"),
            );
            kind
        }
        (None, []) => {
            errors.spanned(
                &sig.ident,
                format!(
                    "`{name}` is neither a standard service method ({STANDARD}) nor marked \
                     `#[method]`; put helper functions in a separate `impl` block"
                ),
            );
            return None;
        }
        (None, [mark, more @ ..]) => {
            for extra in more {
                errors.spanned(extra, "duplicate `#[method]`");
            }
            if CLIENT_NAMES.contains(&name.as_str()) {
                errors.spanned(
                    &sig.ident,
                    format!("`{name}` clashes with the generated client's `{name}`; rename it"),
                );
            }
            Kind::Custom {
                idempotent: parse_mark(mark, errors),
            }
        }
    };

    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format!("service method `{name}` must be `async`"),
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "service methods cannot be `unsafe`");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(&sig.generics, "service methods cannot be generic");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "service methods cannot be variadic");
    }

    // The receiver must be `&self`.
    match sig.inputs.first() {
        Some(FnArg::Receiver(r))
            if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {}
        Some(FnArg::Receiver(r)) => {
            errors.spanned(r, "service methods take `&self`");
        }
        _ => errors.at(
            sig.ident.span(),
            format!("service method `{name}` must take `&self` first"),
        ),
    }

    // The typed arguments: id and/or data by kind, then optionally params.
    let mut typed: Vec<&Type> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            FnArg::Typed(t) => Some(&*t.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let found = typed.len();
    let has_params = typed.last().is_some_and(|ty| is_params(ty));
    if has_params {
        typed.pop();
    }
    let (wants_id, wants_data) = kind.shape();
    let expected = usize::from(wants_id) + usize::from(wants_data);
    let (mut id_ty, mut data_ty) = (None, None);
    if typed.len() == expected {
        let mut it = typed.into_iter().cloned();
        id_ty = if wants_id { it.next() } else { None };
        data_ty = if wants_data { it.next() } else { None };
    } else {
        let what = match kind {
            Kind::Custom { .. } => "a custom method".to_owned(),
            _ => format!("`{name}`"),
        };
        errors.at(
            sig.paren_token.span.join(),
            format!(
                "{what} takes `{}` (`params: Params` may be left out); found {} argument{} \
                 besides `&self`",
                kind.usage(),
                found,
                if found == 1 { "" } else { "s" },
            ),
        );
    }

    let ok_ty = result_ok_type(&sig.output);
    if ok_ty.is_none() {
        let message = "service methods return `Result<T>` (`plume::Result`, or any \
                       `Result<T, E>` whose `E` converts into `plume::Error`)";
        match &sig.output {
            ReturnType::Type(_, ty) => errors.spanned(ty, message),
            ReturnType::Default => errors.at(sig.paren_token.span.close(), message),
        }
    }

    if errors.len() > before {
        return None;
    }
    Some(Method {
        ident: sig.ident.clone(),
        name,
        kind,
        id_ty,
        data_ty,
        has_params,
        ok_ty: ok_ty?,
    })
}

/// Read `#[method]` or `#[method(idempotent)]`; returns the idempotent flag.
fn parse_mark(mark: &Attribute, errors: &mut Errors) -> bool {
    let mut idempotent = false;
    match &mark.meta {
        syn::Meta::Path(_) => {}
        syn::Meta::List(_) => {
            let result = mark.parse_nested_meta(|meta| {
                if meta.path.is_ident("idempotent") {
                    if idempotent {
                        return Err(meta.error("duplicate `idempotent`"));
                    }
                    idempotent = true;
                    Ok(())
                } else {
                    Err(meta.error("unknown `#[method]` option; expected `idempotent`"))
                }
            });
            if let Err(err) = result {
                errors.push(err);
            }
        }
        syn::Meta::NameValue(nv) => {
            errors.spanned(nv, "expected `#[method]` or `#[method(idempotent)]`");
        }
    }
    idempotent
}

/// True for `Params`, `plume::Params` and other paths ending in `Params`.
fn is_params(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "Params" && matches!(s.arguments, PathArguments::None)),
        _ => false,
    }
}

/// `T` of a return type `Result<T>` or `Result<T, E>` (any path ending in `Result`).
fn result_ok_type(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    first_type_arg(ty, "Result").cloned()
}

/// `T` of a type `Name<T, ..>` (any path whose last segment is `name`).
pub(crate) fn first_type_arg<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}
