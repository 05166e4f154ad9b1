//! Test databases: a fresh, migrated store per test.
//!
//! SQLite always works (a file in a temporary directory). PostgreSQL is used when
//! `MEDIC_TEST_DATABASE_URL` names a server where the user may create databases; each test gets
//! its own database `medic_t_<unix seconds>_<random>`, dropped (`WITH (FORCE)`) when its
//! [`TestDb`] is dropped. Dropping needs a round trip and `Drop` cannot await, so it runs on a
//! short-lived thread with its own runtime. A test process that is killed never runs `Drop`;
//! the first PostgreSQL test of the next run therefore drops every `medic_t_*` database whose
//! name says it is more than an hour old.
//!
//! Without `MEDIC_TEST_DATABASE_URL`, PostgreSQL tests are skipped with a note on stderr —
//! unless `MEDIC_TEST_REQUIRE_SERVICES=1` (as in CI), which turns the skip into a failure.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medic_server::store::{self, PoolOptions, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::OnceCell;

pub const DATABASE_URL_VAR: &str = "MEDIC_TEST_DATABASE_URL";
pub const REQUIRE_VAR: &str = "MEDIC_TEST_REQUIRE_SERVICES";

/// Prefix of every database this module creates (and may drop).
const DB_PREFIX: &str = "medic_t_";
/// Databases older than this are leftovers of a killed run.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A fresh, migrated store for one test, plus a guard that cleans up on drop.
pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// The store's URL, for tests that start a whole server on the same database.
    pub url: String,
    _guard: Guard,
}

enum Guard {
    Sqlite { _dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Guard::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, db) = (admin_url.clone(), name.clone());
        let dropper = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping a test database");
            rt.block_on(async {
                let mut conn = admin_connection(&admin_url).await?;
                drop_database(&mut conn, &db).await?;
                conn.close().await
            })
        });
        match dropper.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("note: could not drop test database {name}: {e}"),
            Err(_) => eprintln!("note: dropping test database {name} panicked"),
        }
    }
}

fn pool_options() -> PoolOptions {
    PoolOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(30),
    }
}

async fn open(url: &str) -> Arc<dyn Store> {
    let store = store::connect(url, &pool_options())
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    store.migrate().await.expect("migrate test database");
    store
}

/// A migrated SQLite store in a fresh temporary directory.
pub async fn sqlite() -> TestDb {
    sqlite_empty().open().await
}

/// A database nothing has been applied to (for migration tests); dropped with the value.
pub struct EmptyDb {
    pub url: String,
    guard: Guard,
}

impl EmptyDb {
    /// Opens the store (applying every migration still pending).
    pub async fn open(self) -> TestDb {
        let store = open(&self.url).await;
        TestDb {
            store,
            url: self.url,
            _guard: self.guard,
        }
    }
}

pub fn sqlite_empty() -> EmptyDb {
    let dir = tempfile::TempDir::new().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("medic.db").display());
    EmptyDb {
        url,
        guard: Guard::Sqlite { _dir: dir },
    }
}

pub async fn postgres() -> Option<TestDb> {
    Some(postgres_empty().await?.open().await)
}

/// A new, empty PostgreSQL database when one is configured (see [`postgres`]).
pub async fn postgres_empty() -> Option<EmptyDb> {
    let Some(admin_url) = std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        if std::env::var(REQUIRE_VAR).is_ok_and(|v| v == "1") {
            panic!(
                "{REQUIRE_VAR}=1 but {DATABASE_URL_VAR} is not set; point it at a PostgreSQL \
                 server, e.g. postgres://postgres@127.0.0.1:5432/postgres"
            );
        }
        static NOTED: AtomicBool = AtomicBool::new(false);
        if !NOTED.swap(true, Ordering::Relaxed) {
            eprintln!("note: {DATABASE_URL_VAR} is not set; skipping PostgreSQL tests");
        }
        return None;
    };

    let mut admin = admin_connection(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect to {DATABASE_URL_VAR}: {e}"));
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT
        .get_or_init(|| async { sweep_stale(&mut admin).await })
        .await;

    let name = format!(
        "{DB_PREFIX}{}_{}",
        unix_seconds(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
    let _ = admin.close().await;
    // From here on the guard drops the database, even if migrating fails.
    let guard = Guard::Postgres {
        admin_url: admin_url.clone(),
        name: name.clone(),
    };
    let url = with_database(&admin_url, &name);
    Some(EmptyDb { url, guard })
}

/// SQLite always, plus PostgreSQL when configured.
pub async fn all() -> Vec<(&'static str, TestDb)> {
    let mut out = vec![("sqlite", sqlite().await)];
    if let Some(db) = postgres().await {
        out.push(("postgres", db));
    }
    out
}

async fn admin_connection(url: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(url)?
        .application_name("medic-tests")
        .connect()
        .await
}

async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Drops test databases left behind by runs that were killed before cleaning up.
async fn sweep_stale(admin: &mut PgConnection) {
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'medic\\_t\\_%'",
    )
    .fetch_all(&mut *admin)
    .await
    {
        Ok(names) => names,
        Err(e) => {
            eprintln!("note: could not list old test databases: {e}");
            return;
        }
    };
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name
            .strip_prefix(DB_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|c| c < cutoff)
            && let Err(e) = drop_database(admin, &name).await
        {
            eprintln!("note: could not drop old test database {name}: {e}");
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `url` with its database (the path) replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[test]
fn database_is_replaced_in_urls() {
    assert_eq!(
        with_database("postgres://u@h:5432/postgres", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
        "postgresql://u:p@h/x?sslmode=disable"
    );
}

/// The audit log, oldest first (up to 250 entries); only `action`'s entries when given.
pub async fn audit_log(store: &dyn Store, action: Option<&str>) -> Vec<store::AuditEntry> {
    let filter = store::AuditFilter {
        action_type: action.map(str::to_owned),
        ..store::AuditFilter::default()
    };
    let page = store::PageRequest {
        limit: 250,
        offset: 0,
    };
    let mut entries = store.list_audit(&filter, page).await.unwrap().entries;
    entries.sort_by_key(|e| e.id);
    entries
}
