//! The Plume side of `bench/sql.sh`: a `people` service on `plume-sql`, and the seeding of the
//! table both servers of the benchmark read.
//!
//! ```text
//! sql-people seed  --database-url URL --rows 100000   # create, fill and index `people`
//! sql-people serve --database-url URL --port 4041     # serve it (prints `plume ready on …`)
//! ```
//!
//! The service is what a user would write: `SqlService` mounted as it is, paginated as a
//! generated Feathers app is (default 10, max 50), so every find also counts its total.

#![allow(clippy::print_stdout)]

use anyhow::{Context, Result, bail};
use plume::App;
use plume_sql::{ColumnType, Database, Pool, SqlService, sqlx};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Rows per INSERT while seeding (3 parameters each, well under SQLite's limit).
const BATCH: usize = 1000;

fn people(db: &Database) -> plume::Result<SqlService> {
    SqlService::builder(db, "people")
        .column("name", ColumnType::String)
        .column("age", ColumnType::Integer)
        .column("created", ColumnType::Boolean)
        .paginate(10, 50)
        .build()
}

/// A deterministic name for row `i`: three syllables and the row number, so names sort in an
/// order unrelated to insertion.
fn name(i: u64) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "ja", "pe",
        "zo",
    ];
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let s = |k: u32| SYLLABLES[((h >> k) & 15) as usize];
    format!("{}{}{}-{i}", s(60), s(52), s(44))
}

/// An age in 0..100 spread evenly over the rows, independent of the name.
fn age(i: u64) -> i64 {
    ((i.wrapping_mul(0xD1B5_4A32_D192_ED03) >> 33) % 100) as i64
}

async fn seed(url: &str, rows: u64) -> Result<()> {
    let db = Database::connect(url).await?;
    let service = people(&db)?;
    service.create_table().await?;
    // The same statements on either pool (their query types differ, hence a macro).
    macro_rules! on_pool {
        ($pool:expr, $placeholder:expr, $indexes:expr) => {{
            let pool = $pool;
            let mut i = 0u64;
            while i < rows {
                let n = BATCH.min((rows - i) as usize);
                let values = (0..n)
                    .map(|r| {
                        let p = |c: usize| $placeholder(3 * r + c);
                        format!("({}, {}, {})", p(1), p(2), p(3))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("INSERT INTO people (name, age, created) VALUES {values}");
                // Only placeholders are spliced in; every value is bound.
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for k in i..i + n as u64 {
                    q = q.bind(name(k)).bind(age(k)).bind(k % 3 == 0);
                }
                q.execute(pool).await?;
                i += n as u64;
            }
            for sql in $indexes {
                sqlx::query(sql).execute(pool).await?;
            }
        }};
    }
    // The indexes of the query both servers answer. On PostgreSQL Plume sorts text by code point
    // with nulls first, ties by id (`ORDER BY name COLLATE "C" ASC NULLS FIRST, id`, the memory
    // adapter's order), while knex sends `ORDER BY name ASC` (the database collation, nulls
    // last): each gets the `name` index its ORDER BY can walk. On SQLite one index serves both.
    let sqlite = [
        "CREATE INDEX people_age ON people (age)",
        "CREATE INDEX people_name ON people (name)",
        "ANALYZE people",
    ];
    let postgres = [
        "CREATE INDEX people_age ON people (age)",
        "CREATE INDEX people_name ON people (name)",
        r#"CREATE INDEX people_name_c ON people (name COLLATE "C" ASC NULLS FIRST, id)"#,
        "ANALYZE people",
    ];
    match db.pool() {
        Pool::Sqlite(pool) => on_pool!(pool, |_| "?".to_string(), sqlite),
        Pool::Postgres(pool) => on_pool!(pool, |c: usize| format!("${c}"), postgres),
    }
    db.close().await;
    println!("seeded {rows} rows");
    Ok(())
}

async fn serve(url: &str, port: u16) -> Result<()> {
    let db = Database::connect(url).await?;
    let app = App::new();
    app.use_service("people", people(&db)?);
    let server = app.listen(("127.0.0.1", port)).await?;
    println!("plume ready on http://{}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn arg(args: &[String], name: &str) -> Result<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .with_context(|| format!("missing {name}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--database-url")?;
    match args.get(1).map(String::as_str) {
        Some("seed") => seed(&url, arg(&args, "--rows")?.parse()?).await,
        Some("serve") => serve(&url, arg(&args, "--port")?.parse()?).await,
        _ => bail!("usage: sql-people seed|serve --database-url URL [--rows N | --port P]"),
    }
}
