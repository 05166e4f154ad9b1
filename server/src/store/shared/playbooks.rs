//! Playbooks and their versions, on both backends. A new version locks its playbook's row
//! (`FOR UPDATE` on PostgreSQL; SQLite's single writer serializes writes anyway), so concurrent
//! replicas never number two versions alike; a new playbook claims its name with
//! `ON CONFLICT (name_key) DO NOTHING`, so two creations of one name give one playbook and one
//! `NameTaken`. Reading a playbook with its history takes one snapshot (`Db::READ_SNAPSHOT`).

use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, FromRow, Pool, QueryBuilder, Transaction,
    Type,
};

use super::{Db, Sql, collect, unavailable};
use crate::domain::service::name_key;
use crate::domain::{PlaybookId, Timestamp};
use crate::store::sql::escape_like;
use crate::store::*;

fn push_filter<DB: Db>(qb: &mut QueryBuilder<DB>, filter: &PlaybookFilter)
where
    for<'a> bool: Encode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if let Some(n) = &filter.name_contains {
        qb.push(" AND p.name_key LIKE ")
            .push_bind(format!("%{}%", escape_like(&name_key(n))))
            .push(" ESCAPE '\\'");
    }
    if let Some(e) = filter.enabled {
        qb.push(" AND p.enabled = ").push_bind(e);
    }
}

impl<DB: Db> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> i32: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> &'a str: Encode<'a, DB> + Decode<'a, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'a> Timestamp: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i32>: Encode<'a, DB>,
    for<'a> Option<i64>: Encode<'a, DB>,
    for<'a> Option<bool>: Encode<'a, DB>,
    for<'a> Option<String>: Encode<'a, DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    for<'a> Option<Timestamp>: Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Version `version` of playbook `id`, or its current version.
    async fn version_of(
        conn: &mut DB::Connection,
        id: PlaybookId,
        version: Option<i32>,
    ) -> StoreResult<Option<PlaybookVersion>> {
        let which = if version.is_some() {
            "v.version = $2"
        } else {
            "v.version = p.current_version"
        };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM playbook_versions v JOIN playbooks p \
             ON p.id = v.playbook_id WHERE v.playbook_id = $1 AND {which}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id);
        if let Some(n) = version {
            q = q.bind(n);
        }
        q.fetch_optional(conn)
            .await
            .map_err(unavailable)?
            .map(|r| PlaybookVersion::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn playbook_record(
        conn: &mut DB::Connection,
        id: PlaybookId,
    ) -> StoreResult<Option<PlaybookRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM {RECORD_FROM} WHERE p.id = $1");
        sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(unavailable)?
            .map(|r| PlaybookRecord::from_row(&r))
            .transpose()
            .map_err(unavailable)
    }

    async fn insert_playbook_version(
        conn: &mut DB::Connection,
        id: PlaybookId,
        version: i32,
        new: &NewPlaybookVersion,
    ) -> StoreResult<PlaybookVersion> {
        sqlx::query(
            "INSERT INTO playbook_versions (playbook_id, version, name, sha256, source, author, \
             author_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(version)
        .bind(&new.name)
        .bind(&new.sha256)
        .bind(&new.source)
        .bind(&new.author)
        .bind(new.author_key.as_ref().map(|k| k.0.as_str()))
        .bind(new.at)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
        Self::version_of(conn, id, Some(version))
            .await?
            .ok_or_else(|| StoreError::Unavailable("the new version vanished".into()))
    }

    pub(crate) async fn create_playbook(
        pool: &Pool<DB>,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<CreatePlaybookOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let id: Option<PlaybookId> = sqlx::query_scalar(
            "INSERT INTO playbooks (name, name_key, description, current_version, enabled, \
             created_at, updated_at) VALUES ($1, $2, $3, 1, true, $4, $4) \
             ON CONFLICT (name_key) DO NOTHING RETURNING id",
        )
        .bind(&new.name)
        .bind(name_key(&new.name))
        .bind(&new.description)
        .bind(new.at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(id) = id else {
            let (id, enabled): (PlaybookId, bool) =
                sqlx::query_as("SELECT id, enabled FROM playbooks WHERE name_key = $1")
                    .bind(name_key(&new.name))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            return Ok(CreatePlaybookOutcome::NameTaken { id, enabled });
        };
        let created = Self::insert_playbook_version(&mut tx, id, 1, new).await?;
        Self::insert_audit(&mut tx, &audit(&created)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(CreatePlaybookOutcome::Created(created))
    }

    pub(crate) async fn add_playbook_version(
        pool: &Pool<DB>,
        id: PlaybookId,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<AddVersionOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let sql = format!("SELECT id FROM playbooks WHERE id = $1{}", DB::FOR_UPDATE);
        let locked: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if locked.is_none() {
            return Ok(AddVersionOutcome::NotFound);
        }
        let Some(current) = Self::version_of(&mut tx, id, None).await? else {
            return Ok(AddVersionOutcome::NotFound);
        };
        if !current.enabled {
            return Ok(AddVersionOutcome::Disabled);
        }
        if current.sha256 == new.sha256 {
            return Ok(AddVersionOutcome::Unchanged(current));
        }
        let other: Option<PlaybookId> =
            sqlx::query_scalar("SELECT id FROM playbooks WHERE name_key = $1 AND id <> $2")
                .bind(name_key(&new.name))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if let Some(other) = other {
            return Ok(AddVersionOutcome::NameTaken { id: other });
        }
        let next = current.version + 1;
        let created = Self::insert_playbook_version(&mut tx, id, next, new).await?;
        sqlx::query(
            "UPDATE playbooks SET name = $1, name_key = $2, description = $3, \
             current_version = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(&new.name)
        .bind(name_key(&new.name))
        .bind(&new.description)
        .bind(next)
        .bind(new.at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        Self::insert_audit(&mut tx, &audit(&created)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(AddVersionOutcome::Created(created))
    }

    pub(crate) async fn get_playbook(
        pool: &Pool<DB>,
        id: PlaybookId,
    ) -> StoreResult<Option<Playbook>> {
        // One snapshot for the three reads, so the record, the current version and the history
        // agree even while a version is being added.
        let mut tx = pool.begin().await.map_err(unavailable)?;
        if !DB::READ_SNAPSHOT.is_empty() {
            sqlx::query(DB::READ_SNAPSHOT)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        let Some(record) = Self::playbook_record(&mut tx, id).await? else {
            return Ok(None);
        };
        let current = Self::version_of(&mut tx, id, None)
            .await?
            .ok_or_else(|| StoreError::Unavailable("the current version vanished".into()))?;
        let sql = format!(
            "SELECT {VERSION_INFO_COLUMNS} FROM playbook_versions WHERE playbook_id = $1 \
             ORDER BY version"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok(Some(Playbook {
            record,
            current,
            versions: collect(&rows)?,
        }))
    }

    /// Version `version` of the playbook, or its current version.
    pub(crate) async fn playbook_version(
        pool: &Pool<DB>,
        id: PlaybookId,
        version: Option<i32>,
    ) -> StoreResult<Option<PlaybookVersion>> {
        let mut conn = pool.acquire().await.map_err(unavailable)?;
        Self::version_of(&mut conn, id, version).await
    }

    pub(crate) async fn list_playbooks(
        pool: &Pool<DB>,
        filter: &PlaybookFilter,
        page: PageRequest,
    ) -> StoreResult<Page<PlaybookRecord>> {
        Self::page(
            pool,
            RECORD_FROM,
            RECORD_COLUMNS,
            |qb| push_filter(qb, filter),
            "p.id",
            page,
        )
        .await
    }

    pub(crate) async fn disable_playbook(
        pool: &Pool<DB>,
        id: PlaybookId,
        actor: &str,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let changed = sqlx::query(
            "UPDATE playbooks SET enabled = false, disabled_at = $1, disabled_by = $2, \
             updated_at = $1 WHERE id = $3 AND enabled",
        )
        .bind(at)
        .bind(actor)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        Self::toggled(tx, id, DB::rows_affected(&changed), audit).await
    }

    pub(crate) async fn restore_playbook(
        pool: &Pool<DB>,
        id: PlaybookId,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome> {
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let changed = sqlx::query(
            "UPDATE playbooks SET enabled = true, disabled_at = NULL, disabled_by = NULL, \
             updated_at = $1 WHERE id = $2 AND NOT enabled",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        Self::toggled(tx, id, DB::rows_affected(&changed), audit).await
    }

    /// Ends a disable or restore: reads the row, writes the audit entry when `changed`,
    /// commits.
    async fn toggled(
        mut tx: Transaction<'static, DB>,
        id: PlaybookId,
        changed: u64,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome> {
        let Some(record) = Self::playbook_record(&mut tx, id).await? else {
            return Ok(ToggleOutcome::NotFound);
        };
        if changed == 0 {
            return Ok(ToggleOutcome::Unchanged(record));
        }
        Self::insert_audit(&mut tx, &audit(&record)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(ToggleOutcome::Done(record))
    }
}
