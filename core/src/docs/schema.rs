//! What a service says about its own API: the JSON Schemas of its ids, data and results, per
//! method ([`ServiceSchema`]), and how `#[service]` finds them ([`Probe`]).
//!
//! A `ServiceSchema` does not know its path: the App places it under the path it mounts the
//! service at, and the distribution plugin sends it along with a remote service's descriptor,
//! so the gateway documents the remote service like a local one.

use std::borrow::Cow;
use std::marker::PhantomData;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::params::Id;

/// Where the schemas a service's types refer to live in the OpenAPI document. Every `$ref` a
/// [`ServiceSchema`] holds points there.
pub const COMPONENTS: &str = "#/components/schemas/";

/// The schemas of one service: per method, its id, data and result.
///
/// `#[service]` implements [`Service::schema`](crate::Service::schema) with one of these. A
/// schema is `None` where the type does not implement [`JsonSchema`], or is `Value` (any JSON):
/// the document then describes it with the service's `record` schema when there is one, or as
/// any JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServiceSchema {
    /// The methods, in source order.
    pub methods: Vec<MethodSchema>,
    /// The schema of one record (`#[service(record = T)]`): describes the results that are
    /// `Value`, and `find` as a list or a page of records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Value>,
    /// The named schemas the others refer to (`#/components/schemas/<name>`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub components: Map<String, Value>,
}

/// The schemas of one method.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct MethodSchema {
    /// The method's name on the wire (`find`, …, or a custom method's name).
    pub name: String,
    /// The schema of the id, for methods that take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// For `patch` and `remove`: the id may be left out (the method then applies to every
    /// record the query matches).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub multi: bool,
    /// The schema of the data, for methods that take data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// The schema of the result, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// What the method does (its doc comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl MethodSchema {
    /// A method of this name with nothing known about its types.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Whether the method takes an id in the URL (`get`, `update`, `patch`, `remove`).
    pub fn takes_id(&self) -> bool {
        matches!(self.name.as_str(), "get" | "update" | "patch" | "remove")
    }
}

impl ServiceSchema {
    /// The schemas of a service whose methods are known by name only (a hand-written
    /// [`Service`](crate::Service), an adapter): every schema is "any JSON".
    pub fn untyped<I, S>(methods: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            methods: methods
                .into_iter()
                .map(|name| {
                    let mut m = MethodSchema::new(name);
                    m.multi = matches!(m.name.as_str(), "patch" | "remove");
                    m
                })
                .collect(),
            ..Self::default()
        }
    }

    /// The schemas of `methods`, with the named schemas `generator` collected while making them.
    pub fn from_generator(
        methods: Vec<MethodSchema>,
        record: Option<Value>,
        generator: &mut SchemaGenerator,
    ) -> Self {
        Self {
            methods,
            record,
            components: generator.take_definitions(true),
        }
    }

    /// The method named `name`.
    pub fn method(&self, name: &str) -> Option<&MethodSchema> {
        self.methods.iter().find(|m| m.name == name)
    }
}

/// The generator `#[service]` makes its schemas with: JSON Schema 2020-12 (the dialect of
/// OpenAPI 3.1), named schemas under [`COMPONENTS`].
pub fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// Asks for the schema of `T` whether or not `T` implements [`JsonSchema`]: write
/// `(&&Probe::<T>::new()).schema_in(&mut generator)` with [`ViaSchema`] and [`ViaAny`] in scope.
/// For a `T: JsonSchema` the method of `ViaSchema` is found first (it takes `&&Probe`), and
/// gives the schema; for any other `T` only the method of `ViaAny` applies, and gives `None`.
///
/// This is how a `#[service]` whose types do not derive `JsonSchema` still compiles: its
/// document says "any JSON" where the schema is missing.
#[derive(Debug)]
pub struct Probe<T: ?Sized>(PhantomData<T>);

impl<T: ?Sized> Probe<T> {
    /// A probe for `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: ?Sized> Default for Probe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The schema of a type that implements [`JsonSchema`] (see [`Probe`]).
pub trait ViaSchema {
    /// The schema, as a reference into the generator's definitions where the type is named.
    fn schema_in(&self, generator: &mut SchemaGenerator) -> Option<Value>;
}

impl<T: ?Sized + JsonSchema> ViaSchema for &Probe<T> {
    fn schema_in(&self, generator: &mut SchemaGenerator) -> Option<Value> {
        Some(generator.subschema_for::<T>().to_value())
    }
}

/// No schema, for a type that does not implement [`JsonSchema`] (see [`Probe`]).
pub trait ViaAny {
    /// Always `None`.
    fn schema_in(&self, generator: &mut SchemaGenerator) -> Option<Value>;
}

impl<T: ?Sized> ViaAny for Probe<T> {
    fn schema_in(&self, _generator: &mut SchemaGenerator) -> Option<Value> {
        None
    }
}

/// True for a schema that says nothing: `true`, `{}`, or a missing one.
pub(crate) fn is_any(schema: Option<&Value>) -> bool {
    match schema {
        None | Some(Value::Bool(true)) => true,
        Some(Value::Object(map)) => map.is_empty(),
        Some(_) => false,
    }
}

/// An id is an integer or a string.
impl JsonSchema for Id {
    fn schema_name() -> Cow<'static, str> {
        "Id".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A record id: an integer or a string",
            "type": ["integer", "string"]
        })
    }
}
