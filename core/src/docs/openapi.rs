//! The OpenAPI 3.1 document of a set of services: paths and operations in the Feathers REST
//! mapping, the query syntax of `find`, pages, and Feathers error responses.

use serde_json::{Map, Value, json};

use super::DocsOptions;
use super::schema::{COMPONENTS, MethodSchema, ServiceSchema, is_any};

/// The HTTP status of each Feathers error an operation may answer, with its `className`.
const ERRORS: [(u16, &str, &str); 8] = [
    (400, "BadRequest", "The data, id or query is not valid"),
    (401, "NotAuthenticated", "The call needs authentication"),
    (403, "Forbidden", "The caller may not do this"),
    (404, "NotFound", "No record with this id, or no such path"),
    (
        405,
        "MethodNotAllowed",
        "The service does not offer this method",
    ),
    (429, "TooManyRequests", "Too many requests"),
    (500, "GeneralError", "The service failed"),
    (
        503,
        "Unavailable",
        "The service (or every provider of it) is unavailable",
    ),
];

/// The OpenAPI 3.1 document of `services` (path, schemas), in the order given.
pub fn document(options: &DocsOptions, services: &[(String, ServiceSchema)]) -> Value {
    let mut components = base_components();
    let mut paths = Map::new();
    let mut tags = Vec::new();
    for (path, schema) in services {
        let renames = merge_components(&mut components, &schema.components);
        let schema = rename_refs(schema, &renames);
        tags.push(json!({ "name": path }));
        add_service(&mut paths, path, &schema);
    }
    let mut info = json!({ "title": options.title, "version": options.version });
    if let Some(description) = &options.description {
        info["description"] = Value::String(description.clone());
    }
    json!({
        "openapi": "3.1.0",
        "info": info,
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": tags,
        "paths": paths,
        "components": components,
        "security": [{}, { "bearer": [] }],
    })
}

/// The components every document has: the Feathers error, a page, the error responses and the
/// bearer token scheme of Plume's authentication.
fn base_components() -> Map<String, Value> {
    let mut responses = Map::new();
    for (code, name, description) in ERRORS {
        responses.insert(
            name.to_owned(),
            json!({
                "description": format!("{description} ({code})"),
                "content": { "application/json": { "schema": {
                    "$ref": format!("{COMPONENTS}FeathersError")
                } } }
            }),
        );
    }
    let mut map = Map::new();
    map.insert(
        "schemas".into(),
        json!({
            "FeathersError": {
                "description": "A Feathers error",
                "type": "object",
                "properties": {
                    "name": { "type": "string", "examples": ["NotFound"] },
                    "message": { "type": "string" },
                    "code": { "type": "integer", "minimum": 400, "maximum": 599 },
                    "className": { "type": "string", "examples": ["not-found"] },
                    "data": {},
                    "errors": {}
                },
                "required": ["name", "message", "code", "className"]
            }
        }),
    );
    map.insert("responses".into(), Value::Object(responses));
    map.insert(
        "securitySchemes".into(),
        json!({ "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "The accessToken of `POST /authentication`, where a service needs it"
        } }),
    );
    map
}

/// Add a service's named schemas to the document's. A name taken by a different schema gets a
/// suffix (`Todo_2`); the returned pairs say which names changed.
fn merge_components(
    components: &mut Map<String, Value>,
    add: &Map<String, Value>,
) -> Vec<(String, String)> {
    let Some(Value::Object(schemas)) = components.get_mut("schemas") else {
        return Vec::new();
    };
    let mut renames = Vec::new();
    let mut inserted = Vec::new();
    for (name, schema) in add {
        let mut target = name.clone();
        let mut n = 1;
        while schemas
            .get(&target)
            .is_some_and(|existing| existing != schema)
        {
            n += 1;
            target = format!("{name}_{n}");
        }
        if target != *name {
            renames.push((name.clone(), target.clone()));
        }
        schemas.insert(target.clone(), schema.clone());
        inserted.push(target);
    }
    // The schemas just added may refer to renamed ones.
    if !renames.is_empty() {
        for target in &inserted {
            if let Some(schema) = schemas.get_mut(target) {
                rewrite_refs(schema, &renames);
            }
        }
    }
    renames
}

/// `schema` with every `$ref` to a renamed component pointing at its new name.
fn rename_refs(schema: &ServiceSchema, renames: &[(String, String)]) -> ServiceSchema {
    let mut schema = schema.clone();
    if renames.is_empty() {
        return schema;
    }
    let all = schema
        .methods
        .iter_mut()
        .flat_map(|m| [&mut m.id, &mut m.data, &mut m.result])
        .chain([&mut schema.record]);
    for value in all.flatten() {
        rewrite_refs(value, renames);
    }
    schema
}

fn rewrite_refs(value: &mut Value, renames: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    Value::String(s) if key == "$ref" => {
                        if let Some((_, to)) = renames
                            .iter()
                            .find(|(from, _)| s.strip_prefix(COMPONENTS) == Some(from.as_str()))
                        {
                            *s = format!("{COMPONENTS}{to}");
                        }
                    }
                    other => rewrite_refs(other, renames),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, renames)),
        _ => {}
    }
}

/// `users/:userId/messages` as an OpenAPI path (`/users/{userId}/messages`) and its route
/// parameters.
fn openapi_path(path: &str) -> (String, Vec<Value>) {
    let mut params = Vec::new();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| match segment.strip_prefix(':') {
            Some(name) => {
                params.push(json!({
                    "name": name, "in": "path", "required": true,
                    "schema": { "type": "string" }
                }));
                format!("{{{name}}}")
            }
            None => segment.to_owned(),
        })
        .collect();
    (format!("/{}", segments.join("/")), params)
}

fn add_service(paths: &mut Map<String, Value>, path: &str, schema: &ServiceSchema) {
    let (base, route_params) = openapi_path(path);
    for method in &schema.methods {
        let op = Operation {
            path,
            method,
            record: schema.record.as_ref(),
        };
        let with_id = format!("{base}/{{id}}");
        let custom_path = format!("{base}#{}", method.name);
        let (at, verb, id): (&str, &str, bool) = match method.name.as_str() {
            "find" => (&base, "get", false),
            "get" => (&with_id, "get", true),
            "create" => (&base, "post", false),
            "update" => (&with_id, "put", true),
            "patch" => (&with_id, "patch", true),
            "remove" => (&with_id, "delete", true),
            _ => (&custom_path, "post", false),
        };
        insert(paths, at, &route_params, verb, op.operation(id));
        if method.multi && matches!(method.name.as_str(), "patch" | "remove") {
            insert(paths, &base, &route_params, verb, op.operation(false));
        }
    }
}

fn insert(paths: &mut Map<String, Value>, at: &str, route: &[Value], verb: &str, op: Value) {
    let item = paths
        .entry(at.to_owned())
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(item) = item {
        if !route.is_empty() {
            item.insert("parameters".into(), Value::Array(route.to_vec()));
        }
        item.insert(verb.to_owned(), op);
    }
}

/// One method of one service, as operations.
struct Operation<'a> {
    path: &'a str,
    method: &'a MethodSchema,
    record: Option<&'a Value>,
}

impl Operation<'_> {
    fn operation(&self, with_id: bool) -> Value {
        let name = self.method.name.as_str();
        let standard = matches!(
            name,
            "find" | "get" | "create" | "update" | "patch" | "remove"
        );
        let multi = !with_id && matches!(name, "patch" | "remove");
        let mut params = Vec::new();
        if with_id {
            let id = self
                .method
                .id
                .clone()
                .filter(|s| !is_any(Some(s)))
                .unwrap_or_else(|| json!({ "type": ["integer", "string"] }));
            params.push(json!({
                "name": "id", "in": "path", "required": true,
                "description": "The record's id", "schema": id
            }));
        }
        if name == "find" || multi {
            params.extend(query_parameters(name == "find"));
        }
        if !standard {
            params.push(json!({
                "name": "X-Service-Method", "in": "header", "required": true,
                "description": "Names the custom method (Feathers REST: `POST` to the \
                                service's path with this header)",
                "schema": { "const": name }
            }));
        }
        let operation_id = format!(
            "{}.{}{}",
            self.path.replace(['/', ':'], "_"),
            name,
            if multi { "Many" } else { "" }
        );
        let mut op = Map::new();
        op.insert("tags".into(), json!([self.path]));
        op.insert("operationId".into(), Value::String(operation_id));
        op.insert("summary".into(), Value::String(self.summary(multi)));
        if let Some(description) = &self.method.description {
            op.insert("description".into(), Value::String(description.clone()));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if matches!(name, "create" | "update" | "patch") || !standard {
            let data = self.method.data.clone().unwrap_or_else(|| json!({}));
            op.insert(
                "requestBody".into(),
                json!({ "required": true, "content": { "application/json": { "schema": data } } }),
            );
        }
        op.insert("responses".into(), self.responses(with_id, multi));
        Value::Object(op)
    }

    fn summary(&self, multi: bool) -> String {
        let path = self.path;
        match self.method.name.as_str() {
            "find" => format!("Find {path} (a list, or a page when paginated)"),
            "get" => format!("Get one of {path}"),
            "create" => format!("Create in {path}"),
            "update" => format!("Replace one of {path}"),
            "patch" if multi => format!("Patch every one of {path} the query matches"),
            "patch" => format!("Patch one of {path}"),
            "remove" if multi => format!("Remove every one of {path} the query matches"),
            "remove" => format!("Remove one of {path}"),
            custom => format!("Custom method `{custom}` of {path}"),
        }
    }

    /// The result's schema: the method's own, or else one made from the record's.
    fn result(&self, multi: bool) -> Value {
        let own = self.method.result.as_ref().filter(|s| !is_any(Some(s)));
        if let Some(own) = own {
            return own.clone();
        }
        let name = self.method.name.as_str();
        let standard = matches!(
            name,
            "find" | "get" | "create" | "update" | "patch" | "remove"
        );
        match self.record {
            Some(record) if name == "find" => json!({ "oneOf": [
                { "type": "array", "items": record },
                page(record),
            ] }),
            Some(record) if multi => json!({ "type": "array", "items": record }),
            Some(record) if standard => record.clone(),
            _ => json!({}),
        }
    }

    fn responses(&self, with_id: bool, multi: bool) -> Value {
        let (code, what) = if self.method.name == "create" {
            ("201", "Created")
        } else {
            ("200", "The result")
        };
        let mut responses = Map::new();
        responses.insert(
            code.into(),
            json!({
                "description": what,
                "content": { "application/json": { "schema": self.result(multi) } }
            }),
        );
        for (status, name, _) in ERRORS {
            if status == 404 && !with_id {
                continue;
            }
            responses.insert(
                status.to_string(),
                json!({ "$ref": format!("#/components/responses/{name}") }),
            );
        }
        Value::Object(responses)
    }
}

/// The Feathers page of `item`s: `{total, limit, skip, data}`.
pub(crate) fn page(item: &Value) -> Value {
    json!({
        "type": "object",
        "description": "A page of results (when the service paginates)",
        "properties": {
            "total": { "type": "integer", "minimum": 0 },
            "limit": { "type": "integer", "minimum": 0 },
            "skip": { "type": "integer", "minimum": 0 },
            "data": { "type": "array", "items": item }
        },
        "required": ["total", "limit", "skip", "data"]
    })
}

/// The Feathers query syntax, as far as OpenAPI describes it.
fn query_parameters(find: bool) -> Vec<Value> {
    let mut params = Vec::new();
    if find {
        params.push(json!({
            "name": "$limit", "in": "query",
            "description": "At most this many records (capped by the service's maximum)",
            "schema": { "type": "integer", "minimum": 0 }
        }));
        params.push(json!({
            "name": "$skip", "in": "query",
            "description": "Skip this many records",
            "schema": { "type": "integer", "minimum": 0 }
        }));
        params.push(json!({
            "name": "$sort", "in": "query", "style": "deepObject", "explode": true,
            "description": "Sort by fields: `$sort[field]=1` ascending, `-1` descending",
            "schema": { "type": "object",
                        "additionalProperties": { "type": "integer", "enum": [1, -1] } }
        }));
        params.push(json!({
            "name": "$select", "in": "query", "style": "form", "explode": true,
            "description": "Only these fields (`$select[]=text&$select[]=done`)",
            "schema": { "type": "array", "items": { "type": "string" } }
        }));
    }
    params.push(json!({
        "name": "query", "in": "query", "style": "form", "explode": true,
        "description": "Field filters: `field=value`, or with an operator \
                        `field[$ne]=v`, `$lt`, `$lte`, `$gt`, `$gte`, `$in[]`, `$nin[]`, \
                        and `$or[0][field]=v`",
        "schema": { "type": "object", "additionalProperties": true }
    }));
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_parameters_become_path_templates() {
        let (path, params) = openapi_path("users/:userId/messages");
        assert_eq!(path, "/users/{userId}/messages");
        assert_eq!(params[0]["name"], "userId");
    }

    #[test]
    fn a_clashing_component_is_renamed_and_its_refs_follow() {
        let mut components = base_components();
        let mut a = Map::new();
        a.insert("Todo".into(), json!({ "type": "object" }));
        assert!(merge_components(&mut components, &a).is_empty());
        let mut b = Map::new();
        b.insert("Todo".into(), json!({ "type": "string" }));
        b.insert(
            "List".into(),
            json!({ "items": { "$ref": "#/components/schemas/Todo" } }),
        );
        let renames = merge_components(&mut components, &b);
        assert_eq!(renames, [("Todo".to_owned(), "Todo_2".to_owned())]);
        let mut schema = ServiceSchema::default();
        let mut m = MethodSchema::new("get");
        m.result = Some(json!({ "$ref": "#/components/schemas/Todo" }));
        schema.methods.push(m);
        let renamed = rename_refs(&schema, &renames);
        assert_eq!(
            renamed.methods[0].result,
            Some(json!({ "$ref": "#/components/schemas/Todo_2" }))
        );
        assert_eq!(components["schemas"]["Todo"], json!({ "type": "object" }));
        assert_eq!(
            components["schemas"]["List"]["items"]["$ref"],
            "#/components/schemas/Todo_2"
        );
    }
}
