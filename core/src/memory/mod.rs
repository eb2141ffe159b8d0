//! An in-memory service that speaks the Feathers query syntax, like `@feathersjs/memory`.
//!
//! See [`MemoryService`] for the behaviour and [`crate::query`] for the query syntax. The example
//! of the guide's "The memory adapter" section:
//!
//! ```
//! use plume::memory::Multi;
//! use plume::query::{FieldType, Schema};
//! use plume::{Id, MemoryOptions, MemoryService, Params, Provider};
//! use serde_json::json;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> plume::Result<()> {
//!     let options = MemoryOptions::new()
//!         .paginate(10, 50) // find returns {total, limit, skip, data}
//!         .multi(Multi::All) // array create, patch/remove without an id
//!         .schema(
//!             // REST query values arrive as strings: coerce them to these types.
//!             Schema::new()
//!                 .field("id", FieldType::Integer)
//!                 .field("priority", FieldType::Number)
//!                 .field("done", FieldType::Boolean),
//!         );
//!     let todos: MemoryService = MemoryService::with_options(options);
//!
//!     todos
//!         .create(
//!             json!([
//!                 {"text": "write docs", "done": false, "priority": 2},
//!                 {"text": "ship it", "done": true, "priority": 3},
//!                 {"text": "rest", "done": false, "priority": 1}
//!             ]),
//!             Params::new(),
//!         )
//!         .await?;
//!
//!     // What `GET /todos?done=false&priority[$gte]=2&$select[0]=text` hands the service.
//!     let rest = Params::new()
//!         .with_provider(Provider::Rest)
//!         .with_query(json!({"done": "false", "priority": {"$gte": "2"}, "$select": {"0": "text"}}));
//!     let page = todos.find(rest).await?;
//!     assert_eq!(page, json!({"total": 1, "limit": 10, "skip": 0,
//!                             "data": [{"text": "write docs", "id": 0}]}));
//!
//!     // get/update/patch/remove also apply the query; "1" finds the record with id 1.
//!     let err = todos
//!         .get(Id::from("1"), Params::new().with_query(json!({"done": false})))
//!         .await
//!         .unwrap_err();
//!     assert_eq!(err.message(), "No record found for id '1'");
//!
//!     // Multi patch: every record matching the query.
//!     let patched = todos
//!         .patch(None, json!({"done": true}), Params::new().with_query(json!({"done": false})))
//!         .await?;
//!     assert_eq!(patched.as_array().map(Vec::len), Some(2));
//!     Ok(())
//! }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::params::{Id, Method, Params};
use crate::query::{Query, coerce};
use crate::service::Service;
use crate::sync;

mod options;
mod record;
mod store;
mod typed;

pub use options::{MemoryOptions, Multi, Paginate};
pub use record::{from_record, is_truthy};
use store::Store;

/// An in-memory service storing JSON records, with the Feathers common query syntax.
///
/// * Records keep their insertion order; `find` returns them in that order unless `$sort` says
///   otherwise.
/// * `create` gives a record without a (truthy) id the next integer id, counting from
///   [`MemoryOptions::start_id`] and skipping ids in use; an explicit integer or string id is
///   kept. Creating a record whose id is in use is a `Conflict` (Feathers would overwrite it).
/// * `get`, `update`, `patch` and `remove` find the record by id with [`Id::matches`] (so the
///   REST id `"5"` finds `5`) and also apply `params.query`: a record that does not match is
///   `NotFound "No record found for id '<id>'"`.
/// * `update` replaces the record and keeps its id; `patch` merges the given top-level fields
///   (the id field cannot be patched).
/// * `$select` applies to the results of every method; the id field is always kept.
/// * With `T` other than [`Value`], every record a call would store is first checked by
///   deserializing it into `T`; a failure is a `BadRequest` naming the field, and nothing is
///   stored.
/// * Internal callers may override pagination per call with `params.extra["paginate"]`:
///   `false` turns it off, `{"default": d, "max": m}` replaces it ([`Paginate::for_call`]);
///   and `multi` with `params.extra["multi"]` ([`Multi::for_call`]).
///
/// ```
/// use plume::{MemoryOptions, MemoryService, Params, Service};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> plume::Result<()> {
/// let todos: MemoryService = MemoryService::with_options(MemoryOptions::new().paginate(10, 50));
/// todos.create(json!({"text": "write docs", "done": false, "priority": 2}), Params::new()).await?;
/// todos.create(json!({"text": "ship it", "done": true, "priority": 3}), Params::new()).await?;
///
/// let page = todos
///     .find(Params::new().with_query(json!({
///         "priority": {"$gte": 2},
///         "$sort": {"priority": -1},
///         "$select": ["text"]
///     })))
///     .await?;
/// assert_eq!(page["total"], 2);
/// assert_eq!(page["data"][0], json!({"id": 1, "text": "ship it"}));
///
/// let err = todos.get(7.into(), Params::new()).await.unwrap_err();
/// assert_eq!(err.message(), "No record found for id '7'");
/// # Ok(())
/// # }
/// ```
pub struct MemoryService<T = Value> {
    options: MemoryOptions,
    store: RwLock<Store>,
    _record: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for MemoryService<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryService")
            .field("options", &self.options)
            .field("records", &self.read().records.len())
            .finish()
    }
}

impl<T> Default for MemoryService<T> {
    fn default() -> Self {
        Self::with_options(MemoryOptions::default())
    }
}

impl<T> MemoryService<T> {
    /// An empty service with the default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty service with these options.
    pub fn with_options(options: MemoryOptions) -> Self {
        let next_id = options.start_id;
        Self {
            options,
            store: RwLock::new(Store {
                records: IndexMap::new(),
                next_id,
            }),
            _record: PhantomData,
        }
    }

    /// The options.
    pub fn options_ref(&self) -> &MemoryOptions {
        &self.options
    }

    /// The number of stored records.
    pub fn len(&self) -> usize {
        self.read().records.len()
    }

    /// True when no record is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every stored record, in insertion order.
    pub fn records(&self) -> Vec<Value> {
        self.read().records.values().cloned().collect()
    }

    /// Remove every record (the id counter keeps counting).
    pub fn clear(&self) {
        self.write().records.clear();
    }

    fn read(&self) -> RwLockReadGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-done change: every method builds
        // its changes first and applies them with infallible map operations.
        sync::read(&self.store)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        sync::write(&self.store)
    }
}

impl<T: DeserializeOwned> MemoryService<T> {
    /// Seed the service with records, as `create` would store them (ids are assigned to records
    /// without one). Fails on a record that is not an object, does not deserialize into `T` or
    /// reuses an id.
    pub fn with_records(self, records: impl IntoIterator<Item = Value>) -> Result<Self> {
        let records: Vec<Value> = records.into_iter().collect();
        self.insert_all(records)?;
        Ok(self)
    }

    /// `find(params)`: the records matching `params.query`, as a page
    /// `{total, limit, skip, data}` when paginated, otherwise as an array.
    pub async fn find(&self, params: Params) -> Result<Value> {
        self.do_find(&params)
    }

    /// `get(id, params)`.
    pub async fn get(&self, id: Id, params: Params) -> Result<Value> {
        self.do_get(&id, &params)
    }

    /// `create(data, params)`: one record, or several for an array (with `multi`).
    pub async fn create(&self, data: Value, params: Params) -> Result<Value> {
        self.do_create(data, &params)
    }

    /// `update(id, data, params)`: replace a record, keeping its id.
    pub async fn update(&self, id: Id, data: Value, params: Params) -> Result<Value> {
        self.do_update(&id, data, &params)
    }

    /// `patch(id, data, params)`: merge fields into one record, or into every record matching
    /// the query when `id` is `None` (with `multi`).
    pub async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        self.do_patch(id.as_ref(), data, &params)
    }

    /// `remove(id, params)`: remove one record, or every record matching the query when `id`
    /// is `None` (with `multi`).
    pub async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        self.do_remove(id.as_ref(), &params)
    }

    fn prepare(&self, params: &Params) -> Result<Query> {
        match &self.options.schema {
            Some(schema) => {
                let mut query = params.query.clone();
                coerce(&mut query, schema)?;
                Query::parse(&query)
            }
            None => Query::parse(&params.query),
        }
    }

    fn select(&self, query: &Query, record: &Value) -> Value {
        query.select(record, &self.options.id_field)
    }

    /// Check that a record deserializes into `T`.
    fn validate(&self, record: &Value) -> Result<()> {
        serde_path_to_error::deserialize::<_, T>(record)
            .map(drop)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                if path == "." {
                    Error::bad_request(format!("Invalid data: {inner}"))
                } else {
                    Error::bad_request(format!("Invalid data at '{path}': {inner}"))
                        .with_data(json!({ "field": path }))
                }
            })
    }

    fn do_find(&self, params: &Params) -> Result<Value> {
        let query = self.prepare(params)?;
        let paginate = Paginate::for_call(self.options.paginate, params)?;
        let store = self.read();
        let mut hits: Vec<&Value> = store
            .records
            .values()
            .filter(|r| query.matches(r))
            .collect();
        hits.sort_by(|a, b| query.compare(a, b));
        let total = hits.len();
        let limit = match paginate {
            Some(p) => Some(query.limit.unwrap_or(p.default).min(p.max)),
            None => query.limit,
        };
        let data: Vec<Value> = hits
            .into_iter()
            .skip(query.skip)
            .take(limit.unwrap_or(usize::MAX))
            .map(|r| self.select(&query, r))
            .collect();
        drop(store);
        Ok(match (paginate, limit) {
            (Some(_), Some(limit)) => page(total, limit, query.skip, data),
            _ => Value::Array(data),
        })
    }

    fn do_get(&self, id: &Id, params: &Params) -> Result<Value> {
        let query = self.prepare(params)?;
        let store = self.read();
        let record = store
            .key_of(id)
            .and_then(|key| store.records.get(&key))
            .filter(|r| query.matches(r))
            .ok_or_else(|| Error::no_record(id))?;
        Ok(self.select(&query, record))
    }

    fn do_create(&self, data: Value, params: &Params) -> Result<Value> {
        let query = self.prepare(params)?;
        match data {
            Value::Array(items) => {
                self.options.multi.check(Method::Create, params)?;
                let created = self.insert_all(items)?;
                Ok(created.iter().map(|r| self.select(&query, r)).collect())
            }
            single => {
                let created = self.insert_all(vec![single])?;
                Ok(created
                    .first()
                    .map(|r| self.select(&query, r))
                    .unwrap_or(Value::Null))
            }
        }
    }

    /// Validate and insert records, all or none; returns the stored records.
    fn insert_all(&self, items: Vec<Value>) -> Result<Vec<Value>> {
        let id_field = self.options.id_field.as_str();
        let mut store = self.write();
        let mut next_id = store.next_id;
        let mut batch: Vec<(Id, Value)> = Vec::with_capacity(items.len());
        for item in items {
            let Value::Object(mut record) = item else {
                return Err(Error::bad_request("Data must be an object"));
            };
            let taken = |id: &Id, batch: &[(Id, Value)]| {
                store.key_of(id).is_some() || batch.iter().any(|(b, _)| b.matches(id))
            };
            let id = match record.get(id_field).filter(|v| is_truthy(v)) {
                Some(value) => {
                    let id = Id::from_value(value).ok_or_else(|| {
                        Error::bad_request(format!(
                            "Invalid id: '{id_field}' must be an integer or a string"
                        ))
                    })?;
                    if taken(&id, &batch) {
                        return Err(Error::conflict(format!(
                            "A record with id '{id}' already exists"
                        )));
                    }
                    id
                }
                None => {
                    while taken(&Id::Int(next_id), &batch) {
                        next_id += 1;
                    }
                    let id = Id::Int(next_id);
                    next_id += 1;
                    id
                }
            };
            record.insert(id_field.to_owned(), id.to_value());
            let record = Value::Object(record);
            self.validate(&record)?;
            batch.push((id, record));
        }
        store.next_id = next_id;
        let created = batch.iter().map(|(_, r)| r.clone()).collect();
        store.records.extend(batch);
        Ok(created)
    }

    fn do_update(&self, id: &Id, data: Value, params: &Params) -> Result<Value> {
        let query = self.prepare(params)?;
        let Value::Object(mut data) = data else {
            return Err(Error::bad_request("Data must be an object"));
        };
        let id_field = self.options.id_field.as_str();
        let mut store = self.write();
        let (key, current) = self.matching_record(&store, id, &query)?;
        let stored_id = current
            .get(id_field)
            .cloned()
            .unwrap_or_else(|| key.to_value());
        data.insert(id_field.to_owned(), stored_id);
        let record = Value::Object(data);
        self.validate(&record)?;
        let result = self.select(&query, &record);
        store.records.insert(key, record);
        Ok(result)
    }

    fn do_patch(&self, id: Option<&Id>, data: Value, params: &Params) -> Result<Value> {
        let query = self.prepare(params)?;
        if id.is_none() {
            self.options.multi.check(Method::Patch, params)?;
        }
        let Value::Object(data) = data else {
            return Err(Error::bad_request("Data must be an object"));
        };
        let mut store = self.write();
        let targets: Vec<(Id, &Map<String, Value>)> = match id {
            Some(id) => {
                let (key, current) = self.matching_record(&store, id, &query)?;
                vec![(key, current)]
            }
            None => self.matching_all(&store, &query),
        };
        let mut patched = Vec::with_capacity(targets.len());
        for (key, current) in targets {
            let mut record = current.clone();
            for (field, value) in &data {
                if *field != self.options.id_field {
                    record.insert(field.clone(), value.clone());
                }
            }
            let record = Value::Object(record);
            self.validate(&record)?;
            patched.push((key, record));
        }
        let results: Vec<Value> = patched
            .iter()
            .map(|(_, r)| self.select(&query, r))
            .collect();
        for (key, record) in patched {
            store.records.insert(key, record);
        }
        drop(store);
        Ok(match id {
            Some(_) => results.into_iter().next().unwrap_or(Value::Null),
            None => Value::Array(results),
        })
    }

    fn do_remove(&self, id: Option<&Id>, params: &Params) -> Result<Value> {
        let query = self.prepare(params)?;
        if id.is_none() {
            self.options.multi.check(Method::Remove, params)?;
        }
        let mut store = self.write();
        let keys: Vec<Id> = match id {
            Some(id) => vec![self.matching_record(&store, id, &query)?.0],
            None => self
                .matching_all(&store, &query)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        };
        let removed: Vec<Value> = keys
            .iter()
            .filter_map(|key| store.records.shift_remove(key))
            .map(|r| self.select(&query, &r))
            .collect();
        drop(store);
        Ok(match id {
            Some(_) => removed.into_iter().next().unwrap_or(Value::Null),
            None => Value::Array(removed),
        })
    }

    /// The stored key and record of `id`, if it also matches the query.
    fn matching_record<'s>(
        &self,
        store: &'s Store,
        id: &Id,
        query: &Query,
    ) -> Result<(Id, &'s Map<String, Value>)> {
        store
            .key_of(id)
            .and_then(|key| {
                let record = store.records.get(&key)?;
                let obj = record.as_object().filter(|_| query.matches(record))?;
                Some((key, obj))
            })
            .ok_or_else(|| Error::no_record(id))
    }

    /// Every record matching the query's filter, in `$sort` order (`$limit` and `$skip` are
    /// ignored, as in the Feathers memory adapter's multi patch and remove).
    fn matching_all<'s>(
        &self,
        store: &'s Store,
        query: &Query,
    ) -> Vec<(Id, &'s Map<String, Value>)> {
        let mut hits: Vec<(&'s Id, &'s Value)> = store
            .records
            .iter()
            .filter(|(_, r)| query.matches(r))
            .collect();
        hits.sort_by(|a, b| query.compare(a.1, b.1));
        // invariant: every stored record is an object (insert_all, update and patch store only
        // objects), so filter_map drops nothing.
        hits.into_iter()
            .filter_map(|(k, r)| Some((k.clone(), r.as_object()?)))
            .collect()
    }
}

/// A page of a paginated `find`: `{total, limit, skip, data}`, built as `json!` builds it but
/// with the records moved in (`json!` would serialize `data` into a copy of every record).
fn page(total: usize, limit: usize, skip: usize, data: Vec<Value>) -> Value {
    let mut page = Map::with_capacity(4);
    page.insert("total".to_owned(), Value::from(total));
    page.insert("limit".to_owned(), Value::from(limit));
    page.insert("skip".to_owned(), Value::from(skip));
    page.insert("data".to_owned(), Value::Array(data));
    Value::Object(page)
}

#[async_trait]
impl<T: DeserializeOwned + 'static> Service for MemoryService<T> {
    async fn find(&self, params: Params) -> Result<Value> {
        self.do_find(&params)
    }

    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        self.do_get(&id, &params)
    }

    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        self.do_create(data, &params)
    }

    async fn update(&self, id: Id, data: Value, params: Params) -> Result<Value> {
        self.do_update(&id, data, &params)
    }

    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        self.do_patch(id.as_ref(), data, &params)
    }

    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        self.do_remove(id.as_ref(), &params)
    }

    fn options(&self) -> Value {
        json!({
            "id": self.options.id_field,
            "paginate": self.options.paginate.map_or(Value::Bool(false), |p| json!(p)),
            "multi": self.options.multi.to_json(),
        })
    }
}
