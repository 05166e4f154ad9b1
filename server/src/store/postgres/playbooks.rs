//! Playbooks and their versions on PostgreSQL. A new version locks its playbook's row
//! (`FOR UPDATE`), so concurrent replicas never number two versions alike; a new playbook claims
//! its name with `ON CONFLICT (name_key) DO NOTHING`, so two creations of one name give one
//! playbook and one `NameTaken`.

use sqlx::{AssertSqlSafe, PgConnection, Postgres, QueryBuilder};

use super::*;
use crate::domain::service::name_key;
use crate::store::sql::escape_like;
use crate::store::*;

fn push_filter(qb: &mut QueryBuilder<Postgres>, filter: &PlaybookFilter) {
    qb.push(RECORD_FROM).push(" WHERE true");
    if let Some(n) = &filter.name_contains {
        qb.push(" AND p.name_key LIKE ")
            .push_bind(format!("%{}%", escape_like(&name_key(n))))
            .push(" ESCAPE '\\'");
    }
    if let Some(e) = filter.enabled {
        qb.push(" AND p.enabled = ").push_bind(e);
    }
}

async fn version_of(
    conn: &mut PgConnection,
    id: PlaybookId,
    version: Option<i32>,
) -> Result<Option<PlaybookVersion>, sqlx::Error> {
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
        .await?
        .map(|r| PlaybookVersion::from_row(&r))
        .transpose()
}

async fn record_of(
    conn: &mut PgConnection,
    id: PlaybookId,
) -> Result<Option<PlaybookRecord>, sqlx::Error> {
    let sql = format!("SELECT {RECORD_COLUMNS}{RECORD_FROM} WHERE p.id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|r| PlaybookRecord::from_row(&r))
        .transpose()
}

async fn insert_version(
    conn: &mut PgConnection,
    id: PlaybookId,
    version: i32,
    new: &NewPlaybookVersion,
) -> Result<(), sqlx::Error> {
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
    .execute(conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl PlaybookStore for PgStore {
    async fn create_playbook(
        &self,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<CreatePlaybookOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
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
        insert_version(&mut tx, id, 1, new)
            .await
            .map_err(unavailable)?;
        let created = version_of(&mut tx, id, Some(1))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| StoreError::Unavailable("the new version vanished".into()))?;
        insert_audit(&mut tx, &audit(&created)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(CreatePlaybookOutcome::Created(created))
    }

    async fn add_playbook_version(
        &self,
        id: PlaybookId,
        new: &NewPlaybookVersion,
        audit: AuditWith<'_, PlaybookVersion>,
    ) -> StoreResult<AddVersionOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let locked: Option<i64> =
            sqlx::query_scalar("SELECT id FROM playbooks WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        if locked.is_none() {
            return Ok(AddVersionOutcome::NotFound);
        }
        let Some(current) = version_of(&mut tx, id, None).await.map_err(unavailable)? else {
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
        insert_version(&mut tx, id, next, new)
            .await
            .map_err(unavailable)?;
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
        let created = version_of(&mut tx, id, Some(next))
            .await
            .map_err(unavailable)?
            .ok_or_else(|| StoreError::Unavailable("the new version vanished".into()))?;
        insert_audit(&mut tx, &audit(&created)).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(AddVersionOutcome::Created(created))
    }

    async fn get_playbook(&self, id: PlaybookId) -> StoreResult<Option<Playbook>> {
        // One snapshot for the three reads, so the record, the current version and the history
        // agree even while a version is being added.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        let Some(record) = record_of(&mut tx, id).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let current = version_of(&mut tx, id, None)
            .await
            .map_err(unavailable)?
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
        let versions = collect(&rows, |r| PlaybookVersionInfo::from_row(r))?;
        Ok(Some(Playbook {
            record,
            current,
            versions,
        }))
    }

    async fn current_playbook_version(
        &self,
        id: PlaybookId,
    ) -> StoreResult<Option<PlaybookVersion>> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        version_of(&mut conn, id, None).await.map_err(unavailable)
    }

    async fn get_playbook_version(
        &self,
        id: PlaybookId,
        version: i32,
    ) -> StoreResult<Option<PlaybookVersion>> {
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        version_of(&mut conn, id, Some(version))
            .await
            .map_err(unavailable)
    }

    async fn list_playbooks(
        &self,
        filter: &PlaybookFilter,
        page: PageRequest,
    ) -> StoreResult<Page<PlaybookRecord>> {
        let mut count = QueryBuilder::<Postgres>::new("SELECT count(*)");
        push_filter(&mut count, filter);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut qb = QueryBuilder::<Postgres>::new(format!("SELECT {RECORD_COLUMNS}"));
        push_filter(&mut qb, filter);
        qb.push(" ORDER BY p.id LIMIT ")
            .push_bind(i64::from(page.limit))
            .push(" OFFSET ")
            .push_bind(i64::from(page.offset));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(Page {
            entries: collect(&rows, |r| PlaybookRecord::from_row(r))?,
            total_count: total,
        })
    }

    async fn disable_playbook(
        &self,
        id: PlaybookId,
        actor: &str,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let changed = sqlx::query(
            "UPDATE playbooks SET enabled = false, disabled_at = $1, disabled_by = $2, \
             updated_at = $1 WHERE id = $3 AND enabled",
        )
        .bind(at)
        .bind(actor)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        toggled(tx, id, changed, audit).await
    }

    async fn restore_playbook(
        &self,
        id: PlaybookId,
        at: Timestamp,
        audit: AuditWith<'_, PlaybookRecord>,
    ) -> StoreResult<ToggleOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let changed = sqlx::query(
            "UPDATE playbooks SET enabled = true, disabled_at = NULL, disabled_by = NULL, \
             updated_at = $1 WHERE id = $2 AND NOT enabled",
        )
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        toggled(tx, id, changed, audit).await
    }
}

/// Ends a disable or restore: reads the row, writes the audit entry when `changed`, commits.
async fn toggled(
    mut tx: Transaction<'static, Postgres>,
    id: PlaybookId,
    changed: u64,
    audit: AuditWith<'_, PlaybookRecord>,
) -> StoreResult<ToggleOutcome> {
    let Some(record) = record_of(&mut tx, id).await.map_err(unavailable)? else {
        return Ok(ToggleOutcome::NotFound);
    };
    if changed == 0 {
        return Ok(ToggleOutcome::Unchanged(record));
    }
    insert_audit(&mut tx, &audit(&record)).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(ToggleOutcome::Done(record))
}
