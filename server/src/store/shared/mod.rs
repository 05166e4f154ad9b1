//! The statements both backends run alike, written once.
//!
//! Each area has one file here with the SQL and row handling that is the same on SQLite and
//! PostgreSQL, as associated functions of [`Sql`], generic over the sqlx [`Database`]. The backend
//! files keep only what really differs (bulk statements over `unnest` or `json_each`, `SKIP
//! LOCKED`, time arithmetic, upserts), the choice of pool (SQLite reads and writes on separate
//! pools) and their trait impls, which call these functions. What differs inside an otherwise
//! shared statement is a fragment of [`Db`] (a cast, a row lock, a collation), so the shared SQL
//! reads in full, with its backend-specific holes named.
//!
//! Both backends accept `$N` placeholders (sqlx's SQLite driver binds `$N` to the N-th argument),
//! so one statement text serves both.

pub(crate) mod agents;
pub(crate) mod alerting;
pub(crate) mod audit;
pub(crate) mod executions;
pub(crate) mod keys;
pub(crate) mod notices;
pub(crate) mod playbooks;
pub(crate) mod runs;
pub(crate) mod scripts;
pub(crate) mod secrets;
pub(crate) mod services;
pub(crate) mod sessions;
pub(crate) mod snapshots;
pub(crate) mod teams;

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool};
use sqlx::{Postgres, QueryBuilder, Sqlite, Type};

use super::{Page, PageRequest, StoreError, StoreResult};

/// The fragments of otherwise shared SQL that differ between the backends.
pub(crate) trait Db: Database<Arguments: IntoArguments<Self>> {
    /// Appended to a text column or parameter that `lower()` folds, so that it folds ASCII only
    /// on PostgreSQL whatever the cluster's locale (SQLite's `lower()` folds ASCII only).
    const COLLATE_C: &'static str;
    /// Row lock for a read-modify-write (PostgreSQL; SQLite's one writer needs none).
    const FOR_UPDATE: &'static str;
    /// Row lock on a `services` row that still lets others insert rows referencing it.
    const FOR_NO_KEY_UPDATE: &'static str;
    /// Cast of a text parameter into a JSON column (`jsonb` on PostgreSQL, text on SQLite).
    const JSONB: &'static str;
    /// Cast of a JSON column read back as text.
    const TEXT: &'static str;
    /// Cast of a timestamp parameter PostgreSQL cannot type from its context.
    const TIMESTAMPTZ: &'static str;
    /// Row lock of a queue's claim: skip rows another replica is claiming (PostgreSQL).
    const SKIP_LOCKED: &'static str;
    /// Cast of an integer parameter PostgreSQL cannot type from its context (`$n IS NULL`).
    const BIGINT: &'static str;
    /// Makes a read transaction see one snapshot for all its statements: PostgreSQL's
    /// `REPEATABLE READ`; empty on SQLite, whose read transactions see one snapshot anyway.
    const READ_SNAPSHOT: &'static str;
    /// Most values one statement tests with [`Db::push_in_texts`]: SQLite binds one parameter
    /// per value, PostgreSQL one array.
    const MAX_IN_LIST: usize;
    /// Appends a membership test of the preceding expression in `ids`: `= ANY($n)` with one
    /// array parameter on PostgreSQL, `IN ($n, …)` on SQLite.
    fn push_in_ids(qb: &mut QueryBuilder<Self>, ids: &[i64]);
    /// The same for text values.
    fn push_in_texts(qb: &mut QueryBuilder<Self>, values: &[String]);
    /// How many rows a statement changed (each driver has its own result type).
    fn rows_affected(r: &Self::QueryResult) -> u64;
    /// The timestamp expression `at` plus `seconds` (an integer expression): millisecond
    /// arithmetic on SQLite, an interval on PostgreSQL.
    fn plus_seconds(at: &str, seconds: &str) -> String;
}

/// `IN (…)` with one parameter per value (`IN (NULL)`, which holds for no row, when empty).
fn push_in_list<'a, T>(qb: &mut QueryBuilder<Sqlite>, values: &'a [T])
where
    &'a T: Encode<'a, Sqlite> + Type<Sqlite>,
{
    if values.is_empty() {
        qb.push(" IN (NULL)");
        return;
    }
    qb.push(" IN (");
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v);
    }
    qb.push(")");
}

impl Db for Sqlite {
    const COLLATE_C: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const FOR_NO_KEY_UPDATE: &'static str = "";
    const JSONB: &'static str = "";
    const TEXT: &'static str = "";
    const TIMESTAMPTZ: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const BIGINT: &'static str = "";
    const READ_SNAPSHOT: &'static str = "";
    // SQLite allows 32,766 parameters; a statement stays far below.
    const MAX_IN_LIST: usize = 800;
    fn push_in_ids(qb: &mut QueryBuilder<Self>, ids: &[i64]) {
        push_in_list(qb, ids);
    }
    fn push_in_texts(qb: &mut QueryBuilder<Self>, values: &[String]) {
        push_in_list(qb, values);
    }
    fn rows_affected(r: &Self::QueryResult) -> u64 {
        r.rows_affected()
    }
    fn plus_seconds(at: &str, seconds: &str) -> String {
        format!("{at} + {seconds} * 1000")
    }
}

impl Db for Postgres {
    const COLLATE_C: &'static str = " COLLATE \"C\"";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_NO_KEY_UPDATE: &'static str = " FOR NO KEY UPDATE";
    const JSONB: &'static str = "::jsonb";
    const TEXT: &'static str = "::text";
    const TIMESTAMPTZ: &'static str = "::timestamptz";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const BIGINT: &'static str = "::bigint";
    const READ_SNAPSHOT: &'static str =
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    const MAX_IN_LIST: usize = usize::MAX;
    fn push_in_ids(qb: &mut QueryBuilder<Self>, ids: &[i64]) {
        qb.push(" = ANY(").push_bind(ids.to_vec()).push(")");
    }
    fn push_in_texts(qb: &mut QueryBuilder<Self>, values: &[String]) {
        qb.push(" = ANY(").push_bind(values.to_vec()).push(")");
    }
    fn rows_affected(r: &Self::QueryResult) -> u64 {
        r.rows_affected()
    }
    fn plus_seconds(at: &str, seconds: &str) -> String {
        format!("{at} + make_interval(secs => {seconds})")
    }
}

/// The shared statements of every area (`impl<DB> Sql<DB>` blocks in this module's files).
///
/// Each block carries the same bounds, written out once per file (Rust does not imply bounds
/// on other types from a trait): `DB`'s connections execute queries, and the values the stores
/// bind and read (integers, flags, text, timestamps; ids and enums follow from these, see
/// `sql.rs`) encode and decode on `DB`.
pub(crate) struct Sql<DB>(PhantomData<DB>);

/// Reads every row as a `T`.
pub(crate) fn collect<R: sqlx::Row, T: for<'r> FromRow<'r, R>>(rows: &[R]) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(|r| T::from_row(r))
        .collect::<Result<_, _>>()
        .map_err(unavailable)
}

pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    super::classify(e)
}

impl<DB: Db> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// `SELECT count(*)` and one page of `SELECT {columns}` over `from`, both filtered by
    /// `filter`, ordered by `order`.
    pub(crate) async fn page<T>(
        pool: &Pool<DB>,
        from: &str,
        columns: &str,
        filter: impl Fn(&mut QueryBuilder<DB>),
        order: &str,
        page: PageRequest,
    ) -> StoreResult<Page<T>>
    where
        T: for<'r> FromRow<'r, DB::Row> + Send + Unpin,
    {
        let mut count = QueryBuilder::<DB>::new(format!("SELECT count(*) FROM {from}"));
        filter(&mut count);
        let total_count: i64 = count
            .build_query_scalar()
            .fetch_one(pool)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<DB>::new(format!("SELECT {columns} FROM {from}"));
        filter(&mut qb);
        qb.push(" ORDER BY ")
            .push(order)
            .push(" LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let entries = qb
            .build_query_as()
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
        Ok(Page {
            entries,
            total_count,
        })
    }
}
