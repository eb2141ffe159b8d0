//! Validating OpenAPI 3.1 documents and the responses they describe, offline: the official
//! OpenAPI 3.1 schemas are vendored in `core/tests/fixtures/openapi-3.1` (see its README).
//! Included with `#[path]` (by core's tests and the demo's).

#![allow(dead_code)]

use serde_json::{Value, json};

/// Resolves the OpenAPI schemas' own URIs to the vendored files; any other URI is an error
/// (nothing is fetched).
struct Vendored;

impl jsonschema::Retrieve for Vendored {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let file = match uri.as_str() {
            "https://spec.openapis.org/oas/3.1/schema/2022-10-07" => "schema.json",
            "https://spec.openapis.org/oas/3.1/dialect/base" => "dialect-base.json",
            "https://spec.openapis.org/oas/3.1/meta/base" => "meta-base.json",
            other => return Err(format!("not vendored: {other}").into()),
        };
        Ok(fixture(file))
    }
}

/// A vendored schema (embedded relative to this file, so other crates' tests can include it).
fn fixture(name: &str) -> Value {
    let text = match name {
        "schema.json" => include_str!("../fixtures/openapi-3.1/schema.json"),
        "schema-base.json" => include_str!("../fixtures/openapi-3.1/schema-base.json"),
        "dialect-base.json" => include_str!("../fixtures/openapi-3.1/dialect-base.json"),
        "meta-base.json" => include_str!("../fixtures/openapi-3.1/meta-base.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).expect("a fixture is JSON")
}

/// Every error of `instance` against `schema`, as text.
fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Panic unless `doc` is a valid OpenAPI 3.1 document, its schemas included (the
/// `schema-base` variant checks every Schema Object against the OpenAPI dialect).
pub(crate) fn assert_valid_openapi(doc: &Value) {
    let validator = jsonschema::options()
        .with_retriever(Vendored)
        .build(&fixture("schema-base.json"))
        .expect("the OpenAPI 3.1 schema compiles");
    let found = errors(&validator, doc);
    assert!(
        found.is_empty(),
        "not a valid OpenAPI 3.1 document: {found:#?}\n{doc:#}"
    );
}

/// The schema of the `status` response of `verb path` (following a `$ref` to a response).
pub(crate) fn response_schema(doc: &Value, path: &str, verb: &str, status: u16) -> Value {
    let mut response = &doc["paths"][path][verb]["responses"][status.to_string()];
    if let Some(reference) = response["$ref"].as_str() {
        let pointer = reference.trim_start_matches('#');
        response = doc.pointer(pointer).unwrap_or(&Value::Null);
    }
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        !schema.is_null(),
        "no {status} response schema for {verb} {path}"
    );
    schema.clone()
}

/// Panic unless `body` validates against the schema `doc` gives for the `status` response of
/// `verb path` (its `$ref`s resolved in `doc`).
pub(crate) fn assert_response_matches(
    doc: &Value,
    path: &str,
    verb: &str,
    status: u16,
    body: &Value,
) {
    let schema = response_schema(doc, path, verb, status);
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
    });
    match schema {
        Value::Object(map) => {
            for (k, v) in map {
                root[k] = v;
            }
        }
        Value::Bool(true) => {}
        other => panic!("unexpected schema {other}"),
    }
    let validator = jsonschema::options()
        .offline()
        .build(&root)
        .unwrap_or_else(|e| panic!("the schema of {verb} {path} {status} compiles: {e}"));
    let found = errors(&validator, body);
    assert!(
        found.is_empty(),
        "{verb} {path} answered {status} with a body its schema refuses: {found:#?}\nbody: {body:#}"
    );
}
