//! The typed face of [`MemoryService<T>`]: each method with its data serialized from any
//! `Serialize` type and its result deserialized into `T`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{MemoryService, from_record};
use crate::error::{Error, Result};
use crate::params::{Id, Params};

/// The typed methods: the same calls as the JSON ones (`find`, `get`, `create`, ...), with
/// results as `T` and data from any `Serialize` type (a `NewTodo` without an id creates a
/// `Todo` with one).
///
/// ```
/// use plume::{MemoryService, Params};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Deserialize)]
/// struct Todo { id: i64, text: String, done: bool }
///
/// #[derive(Serialize)]
/// struct NewTodo<'a> { text: &'a str, done: bool }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> plume::Result<()> {
/// let todos: MemoryService<Todo> = MemoryService::new();
/// let created = todos.create_typed(&NewTodo { text: "write docs", done: false }, Params::new()).await?;
/// assert_eq!(created, Todo { id: 0, text: "write docs".into(), done: false });
/// let done = todos.patch_typed(0, &serde_json::json!({"done": true}), Params::new()).await?;
/// assert!(done.done);
/// assert_eq!(todos.find_typed(Params::new()).await?, [done]);
/// # Ok(())
/// # }
/// ```
impl<T: DeserializeOwned> MemoryService<T> {
    /// `get`, deserialized into `T`.
    pub async fn get_typed(&self, id: impl Into<Id>, params: Params) -> Result<T> {
        from_record(self.do_get(&id.into(), &params)?)
    }

    /// `find`, without pagination, deserialized into `T`.
    pub async fn find_typed(&self, mut params: Params) -> Result<Vec<T>> {
        params
            .extra
            .insert("paginate".to_owned(), Value::Bool(false));
        let Value::Array(records) = self.do_find(&params)? else {
            return Err(Error::general_error(
                "find without pagination returned no array",
            ));
        };
        records.into_iter().map(from_record).collect()
    }

    /// `create` of one record from `data`, the created record deserialized into `T`.
    pub async fn create_typed<D: Serialize + ?Sized>(&self, data: &D, params: Params) -> Result<T> {
        let data = to_data(data)?;
        if data.is_array() {
            return Err(Error::bad_request(
                "create_typed creates one record; use create_many_typed for an array",
            ));
        }
        from_record(self.do_create(data, &params)?)
    }

    /// `create` of several records (with `multi`), the created records deserialized into `T`.
    pub async fn create_many_typed<D: Serialize>(
        &self,
        data: &[D],
        params: Params,
    ) -> Result<Vec<T>> {
        let created = self.do_create(to_data(data)?, &params)?;
        from_records(created)
    }

    /// `update`: replace the record `id` with `data` (its id kept), deserialized into `T`.
    pub async fn update_typed<D: Serialize + ?Sized>(
        &self,
        id: impl Into<Id>,
        data: &D,
        params: Params,
    ) -> Result<T> {
        from_record(self.do_update(&id.into(), to_data(data)?, &params)?)
    }

    /// `patch`: merge the fields of `data` into the record `id`, deserialized into `T`.
    pub async fn patch_typed<D: Serialize + ?Sized>(
        &self,
        id: impl Into<Id>,
        data: &D,
        params: Params,
    ) -> Result<T> {
        from_record(self.do_patch(Some(&id.into()), to_data(data)?, &params)?)
    }

    /// `patch` of every record matching `params.query` (with `multi`), deserialized into `T`.
    pub async fn patch_many_typed<D: Serialize + ?Sized>(
        &self,
        data: &D,
        params: Params,
    ) -> Result<Vec<T>> {
        from_records(self.do_patch(None, to_data(data)?, &params)?)
    }

    /// `remove` of the record `id`, the removed record deserialized into `T`.
    pub async fn remove_typed(&self, id: impl Into<Id>, params: Params) -> Result<T> {
        from_record(self.do_remove(Some(&id.into()), &params)?)
    }

    /// `remove` of every record matching `params.query` (with `multi`), deserialized into `T`.
    pub async fn remove_many_typed(&self, params: Params) -> Result<Vec<T>> {
        from_records(self.do_remove(None, &params)?)
    }
}

/// `data` as the JSON a call takes; a type that does not serialize to JSON is a BadRequest.
fn to_data<D: Serialize + ?Sized>(data: &D) -> Result<Value> {
    serde_json::to_value(data)
        .map_err(|e| Error::bad_request(format!("The data does not serialize to JSON: {e}")))
}

/// The records of a multi call, each deserialized into `T`.
fn from_records<T: DeserializeOwned>(records: Value) -> Result<Vec<T>> {
    match records {
        Value::Array(records) => records.into_iter().map(from_record).collect(),
        other => Err(Error::general_error(format!(
            "a multi call returned no array: {other}"
        ))),
    }
}
