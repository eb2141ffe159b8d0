//! A Feathers query as SQL: the filter (with `$like`, `$notlike` and `$ilike` besides Plume's
//! common operators), `$sort`, `$select`, `$limit` and `$skip`.
//!
//! The query is coerced to the column types and parsed with `plume::query` (so the operators,
//! the lenient `$limit`/`$skip`/`$sort` rules and the error messages are those of the memory
//! adapter); only the three `LIKE` operators are taken out first, as Plume's common syntax does
//! not have them.

use plume::query::{Clause, Filter, Op, Order, Query, SortKey, coerce};
use plume::{Error, Result};
use sea_query::extension::postgres::PgExpr;
use sea_query::{Alias, BinOper, Condition, Expr, ExprTrait, Func};
use serde_json::{Map, Value, json};

use crate::database::Backend;
use crate::schema::{ColumnType, TableDef, to_sql};

/// A query ready to be turned into SQL.
#[derive(Debug, Default)]
pub(crate) struct SqlQuery {
    /// The conditions, all of which must hold.
    pub(crate) filter: Vec<Cond>,
    /// `$limit`, `$skip`, `$sort`, `$select` (its filter is empty).
    pub(crate) query: Query,
}

/// One condition.
#[derive(Debug)]
pub(crate) enum Cond {
    /// A common operator on a column.
    Field { field: String, op: Op },
    /// `$like` / `$notlike` / `$ilike`.
    Like {
        field: String,
        pattern: String,
        kind: LikeKind,
    },
    /// `$or`: one of the branches holds.
    Or(Vec<Vec<Cond>>),
    /// `$and`: every branch holds.
    And(Vec<Vec<Cond>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LikeKind {
    Like,
    NotLike,
    ILike,
}

impl LikeKind {
    fn from_operator(op: &str) -> Option<LikeKind> {
        match op {
            "$like" => Some(LikeKind::Like),
            "$notlike" => Some(LikeKind::NotLike),
            "$ilike" => Some(LikeKind::ILike),
            _ => None,
        }
    }
}

fn unknown_field(field: &str) -> Error {
    Error::bad_request(format!("Unknown field '{field}'")).with_data(json!({ "field": field }))
}

/// Parse `params.query` for `table`: coerce it to the column types, check every field, and
/// split it into conditions and the other filters.
pub(crate) fn parse(query: &Map<String, Value>, table: &TableDef) -> Result<SqlQuery> {
    let mut query = query.clone();
    coerce(&mut query, &table.query_schema())?;
    let mut filters = Map::new();
    let mut conds = Vec::new();
    for (key, value) in query {
        match key.as_str() {
            "$or" | "$and" => conds.push(parse_branches(&key, &value, table)?),
            // `$limit`, `$skip`, `$sort`, `$select`, or an unknown `$` key that `Query::parse`
            // rejects with the Feathers message.
            k if k.starts_with('$') => {
                filters.insert(key, value);
            }
            _ => parse_property(&key, value, table, &mut conds)?,
        }
    }
    let parsed = Query::parse(&filters)?;
    for key in &parsed.sort {
        check_column(&key.field, table, "sort by")?;
    }
    for field in parsed.select.iter().flatten() {
        if table.type_of(field).is_none() {
            return Err(unknown_field(field));
        }
    }
    Ok(SqlQuery {
        filter: conds,
        query: parsed,
    })
}

/// The type of a queryable column; unknown and JSON columns are a `BadRequest`.
fn check_column(field: &str, table: &TableDef, what: &str) -> Result<ColumnType> {
    match table.type_of(field) {
        None => Err(unknown_field(field)),
        Some(ColumnType::Json) => Err(Error::bad_request(format!(
            "Can not {what} the JSON field '{field}'"
        ))
        .with_data(json!({ "field": field }))),
        Some(ty) => Ok(ty),
    }
}

fn parse_branches(name: &str, value: &Value, table: &TableDef) -> Result<Cond> {
    // `coerce` made every `$or`/`$and` an array of objects.
    let Value::Array(items) = value else {
        return Err(Error::bad_request(format!(
            "Invalid query parameter {name}: expected an array"
        )));
    };
    let mut branches = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(obj) = item else {
            return Err(Error::bad_request(format!(
                "Invalid query parameter {name}: expected an array of objects"
            )));
        };
        let mut conds = Vec::new();
        for (key, value) in obj {
            match key.as_str() {
                "$or" | "$and" => conds.push(parse_branches(key, value, table)?),
                k if k.starts_with('$') => {
                    return Err(Error::bad_request(format!("Invalid query parameter {k}")));
                }
                _ => parse_property(key, value.clone(), table, &mut conds)?,
            }
        }
        branches.push(conds);
    }
    Ok(if name == "$or" {
        Cond::Or(branches)
    } else {
        Cond::And(branches)
    })
}

/// One property: the `LIKE` operators here, the rest through `Filter::parse`.
fn parse_property(field: &str, value: Value, table: &TableDef, out: &mut Vec<Cond>) -> Result<()> {
    let ty = check_column(field, table, "query")?;
    let mut rest = value;
    if let Value::Object(ops) = &mut rest {
        let likes: Vec<String> = ops
            .keys()
            .filter(|k| LikeKind::from_operator(k).is_some())
            .cloned()
            .collect();
        for op in likes {
            let (Some(kind), Some(operand)) = (LikeKind::from_operator(&op), ops.remove(&op))
            else {
                continue;
            };
            let Value::String(pattern) = operand else {
                return Err(Error::bad_request(format!(
                    "Invalid query value for '{field}': {op} expects a string"
                ))
                .with_data(json!({ "field": field })));
            };
            if ty != ColumnType::String {
                return Err(Error::bad_request(format!(
                    "Invalid query for '{field}': {op} works on text fields only"
                ))
                .with_data(json!({ "field": field })));
            }
            out.push(Cond::Like {
                field: field.to_owned(),
                pattern,
                kind,
            });
        }
        if ops.is_empty() {
            return Ok(());
        }
    }
    let mut single = Map::new();
    single.insert(field.to_owned(), rest);
    let Filter { clauses } = Filter::parse(&single)?;
    for clause in clauses {
        if let Clause::Field { field, op } = clause {
            out.push(Cond::Field { field, op });
        }
    }
    Ok(())
}

fn col(field: &str) -> Expr {
    Expr::col(Alias::new(field))
}

/// A column for comparisons and sorting: on PostgreSQL, text compares by code point
/// (`COLLATE "C"`), as the memory adapter and SQLite do, whatever the database's locale.
pub(crate) fn ordered_col(field: &str, ty: ColumnType, backend: Backend) -> Expr {
    if backend == Backend::Postgres && ty == ColumnType::String {
        Expr::cust_with_expr("$1 COLLATE \"C\"", col(field))
    } else {
        col(field)
    }
}

/// The SQL condition of a list of conditions (all must hold).
pub(crate) fn condition(conds: &[Cond], table: &TableDef, backend: Backend) -> Result<Condition> {
    let mut all = Condition::all();
    for cond in conds {
        all = all.add(one(cond, table, backend)?);
    }
    Ok(all)
}

fn one(cond: &Cond, table: &TableDef, backend: Backend) -> Result<Condition> {
    Ok(match cond {
        Cond::Or(branches) => {
            let mut any = Condition::any();
            if branches.is_empty() {
                // An empty `$or` matches nothing.
                any = any.add(Expr::val(1).eq(0));
            }
            for branch in branches {
                any = any.add(condition(branch, table, backend)?);
            }
            any
        }
        Cond::And(branches) => {
            let mut all = Condition::all();
            for branch in branches {
                all = all.add(condition(branch, table, backend)?);
            }
            all
        }
        Cond::Like {
            field,
            pattern,
            kind,
        } => Condition::all().add(like(field, pattern, *kind, backend)),
        Cond::Field { field, op } => {
            let ty = check_column(field, table, "query")?;
            Condition::all().add(field_op(field, ty, op, backend)?)
        }
    })
}

fn like(field: &str, pattern: &str, kind: LikeKind, backend: Backend) -> Expr {
    let pattern = pattern.to_owned();
    match (kind, backend) {
        (LikeKind::Like, _) => col(field).like(pattern),
        (LikeKind::NotLike, _) => col(field).not_like(pattern),
        (LikeKind::ILike, Backend::Postgres) => col(field).ilike(pattern),
        // SQLite has no ILIKE; its LOWER folds ASCII letters only.
        (LikeKind::ILike, Backend::Sqlite) => Expr::from(Func::lower(col(field)))
            .binary(BinOper::Like, Func::lower(Expr::val(pattern))),
    }
}

/// One operator, with the memory adapter's semantics: a missing field (`NULL`) equals `null`,
/// is unequal to everything else and never passes a range operator.
fn field_op(field: &str, ty: ColumnType, op: &Op, backend: Backend) -> Result<Expr> {
    let value = |v: &Value| to_sql(field, ty, v);
    let c = || ordered_col(field, ty, backend);
    let non_null = |items: &[Value]| -> Result<(Vec<sea_query::Value>, bool)> {
        let mut values = Vec::new();
        let mut has_null = false;
        for item in items {
            if item.is_null() {
                has_null = true;
            } else {
                values.push(value(item)?);
            }
        }
        Ok((values, has_null))
    };
    Ok(match op {
        Op::Eq(Value::Null) => col(field).is_null(),
        Op::Ne(Value::Null) => col(field).is_not_null(),
        Op::Eq(v) => c().eq(value(v)?),
        Op::Ne(v) => c().ne(value(v)?).or(col(field).is_null()),
        Op::In(items) => {
            let (values, has_null) = non_null(items)?;
            let mut expr = if values.is_empty() {
                Expr::val(1).eq(0)
            } else {
                c().is_in(values)
            };
            if has_null {
                expr = expr.or(col(field).is_null());
            }
            expr
        }
        Op::Nin(items) => {
            let (values, has_null) = non_null(items)?;
            let not_in = if values.is_empty() {
                Expr::val(1).eq(1)
            } else {
                c().is_not_in(values)
            };
            if has_null {
                not_in.and(col(field).is_not_null())
            } else {
                not_in.or(col(field).is_null())
            }
        }
        Op::Lt(v) | Op::Lte(v) | Op::Gt(v) | Op::Gte(v) if v.is_null() => Expr::val(1).eq(0),
        Op::Lt(v) => c().lt(value(v)?),
        Op::Lte(v) => c().lte(value(v)?),
        Op::Gt(v) => c().gt(value(v)?),
        Op::Gte(v) => c().gte(value(v)?),
    })
}

/// `$sort` as `ORDER BY` keys: `NULL` first when ascending, last when descending (a missing
/// field sorts before every value, as in the memory adapter).
pub(crate) fn sort_keys(
    sort: &[SortKey],
    table: &TableDef,
    backend: Backend,
) -> Result<Vec<(Expr, sea_query::Order, sea_query::NullOrdering)>> {
    sort.iter()
        .map(|key| {
            let ty = check_column(&key.field, table, "sort by")?;
            let (order, nulls) = match key.order {
                Order::Asc => (sea_query::Order::Asc, sea_query::NullOrdering::First),
                Order::Desc => (sea_query::Order::Desc, sea_query::NullOrdering::Last),
            };
            Ok((ordered_col(&key.field, ty, backend), order, nulls))
        })
        .collect()
}
