//! The options the adapters share: page sizes ([`Paginate`]), which methods may touch several
//! records ([`Multi`]), and the memory adapter's own [`MemoryOptions`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::params::{Method, Params};
use crate::query::Schema;

/// Page sizes for `find`: `$limit` defaults to `default` and is capped at `max`.
///
/// As JSON (`params.extra["paginate"]`), `max` may be left out: then `$limit` is not capped, as
/// in Feathers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paginate {
    /// The page size when the query has no (valid) `$limit`.
    pub default: usize,
    /// The largest page size; a larger `$limit` is capped.
    #[serde(default = "unlimited")]
    pub max: usize,
}

fn unlimited() -> usize {
    usize::MAX
}

impl Paginate {
    /// The pagination of one call: `params.extra["paginate"]` overrides `configured` (`false`
    /// or `null` turns it off, `{"default": d, "max": m}` replaces it), as Feathers'
    /// `params.paginate` does.
    pub fn for_call(configured: Option<Paginate>, params: &Params) -> Result<Option<Paginate>> {
        match params.extra.get("paginate") {
            None => Ok(configured),
            Some(Value::Bool(false)) | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|e| Error::bad_request(format!("Invalid params.paginate: {e}"))),
        }
    }
}

/// Which methods may work on several records at once: `create` with an array, `patch` and
/// `remove` without an id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Multi {
    /// None (the default): such calls fail with `MethodNotAllowed`.
    #[default]
    None,
    /// All three.
    All,
    /// Only these methods.
    Methods(Vec<Method>),
}

impl Multi {
    /// True when `method` may work on several records.
    pub fn allows(&self, method: &Method) -> bool {
        match self {
            Multi::None => false,
            Multi::All => true,
            Multi::Methods(methods) => methods.contains(method),
        }
    }

    /// The multi option of one call: `params.extra["multi"]` (`true`, `false` or a list of
    /// method names, as Feathers' `params.adapter.multi`) overrides this one.
    pub fn for_call(&self, params: &Params) -> Multi {
        match params.extra.get("multi") {
            None => self.clone(),
            Some(Value::Bool(true)) => Multi::All,
            Some(Value::Array(names)) => Multi::Methods(
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(Method::from_name)
                    .collect(),
            ),
            Some(_) => Multi::None,
        }
    }

    /// `Ok` when `method` may work on several records in this call (see [`Multi::for_call`]),
    /// else the Feathers `MethodNotAllowed` "Can not <method> multiple entries".
    pub fn check(&self, method: Method, params: &Params) -> Result<()> {
        if self.for_call(params).allows(&method) {
            Ok(())
        } else {
            Err(Error::method_not_allowed(format!(
                "Can not {method} multiple entries"
            )))
        }
    }

    /// The Feathers form: `false`, `true` or a list of method names.
    pub fn to_json(&self) -> Value {
        match self {
            Multi::None => Value::Bool(false),
            Multi::All => Value::Bool(true),
            Multi::Methods(methods) => methods.iter().map(|m| Value::from(m.as_str())).collect(),
        }
    }
}

/// Options of a [`MemoryService`].
///
/// ```
/// use plume::{MemoryOptions, Method};
/// use plume::memory::Multi;
///
/// let options = MemoryOptions::new()
///     .id_field("_id")
///     .paginate(10, 50)
///     .multi(Multi::Methods(vec![Method::Create, Method::Remove]))
///     .start_id(1);
/// assert_eq!(options.id_field, "_id");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryOptions {
    /// The name of the id field (default `"id"`).
    pub id_field: String,
    /// Pagination of `find`; `None` (the default) makes `find` return a plain array.
    pub paginate: Option<Paginate>,
    /// Which methods may work on several records (default none).
    pub multi: Multi,
    /// Field types to coerce query values to (for queries that arrive over REST as strings).
    pub schema: Option<Schema>,
    /// The first id given to a record created without one (default 0).
    pub start_id: i64,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            id_field: "id".to_owned(),
            paginate: None,
            multi: Multi::None,
            schema: None,
            start_id: 0,
        }
    }
}

impl MemoryOptions {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the id field.
    #[must_use]
    pub fn id_field(mut self, name: impl Into<String>) -> Self {
        self.id_field = name.into();
        self
    }

    /// Paginate `find` with this default and maximum page size.
    #[must_use]
    pub fn paginate(mut self, default: usize, max: usize) -> Self {
        self.paginate = Some(Paginate { default, max });
        self
    }

    /// Set which methods may work on several records.
    #[must_use]
    pub fn multi(mut self, multi: Multi) -> Self {
        self.multi = multi;
        self
    }

    /// Coerce queries to these field types.
    #[must_use]
    pub fn schema(mut self, schema: Schema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Set the first automatically assigned id.
    #[must_use]
    pub fn start_id(mut self, start: i64) -> Self {
        self.start_id = start;
        self
    }
}
