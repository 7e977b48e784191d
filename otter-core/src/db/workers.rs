//! The `workers` table: one row per live worker process, renewed by its heartbeat.

use sqlx::PgPool;

use super::DbError;

/// A worker's heartbeat: who it is and how busy.
#[derive(Debug, Clone)]
pub struct WorkerBeat<'a> {
    /// `OTTER_WORKER_ID`.
    pub id: &'a str,
    /// The machine it runs on.
    pub hostname: &'a str,
    /// Its process id.
    pub pid: i32,
    /// `OTTER_WORKER_CONCURRENCY`.
    pub concurrency: i32,
    /// Jobs it runs now.
    pub running: i32,
    /// The least free space of its workspace filesystems, in bytes.
    pub disk_free_bytes: Option<i64>,
    /// Why it claims nothing now (`disk_low: …`), if it does not.
    pub claims_paused: Option<&'a str>,
}

/// Records a heartbeat.
pub async fn beat(pool: &PgPool, beat: &WorkerBeat<'_>) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO workers (id, hostname, pid, concurrency, running, disk_free_bytes,
                              claims_paused)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
            concurrency = EXCLUDED.concurrency, running = EXCLUDED.running,
            disk_free_bytes = EXCLUDED.disk_free_bytes, claims_paused = EXCLUDED.claims_paused,
            last_seen_at = now()",
    )
    .bind(beat.id)
    .bind(beat.hostname)
    .bind(beat.pid)
    .bind(beat.concurrency)
    .bind(beat.running)
    .bind(beat.disk_free_bytes)
    .bind(beat.claims_paused)
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes a worker that stopped cleanly.
pub async fn remove(pool: &PgPool, id: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM workers WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
