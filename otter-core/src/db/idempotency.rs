//! The `idempotency_keys` table: which request an `Idempotency-Key` belongs to, and the answer
//! it got. The primary key `(scope, key)` decides between concurrent requests with one key: the
//! one whose [`claim`] inserted the row acts, the others read the row it holds.

use std::time::Duration;

use sqlx::PgPool;

use super::DbError;

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's now: act, then [`complete`] (or [`release`]).
    Claimed,
    /// Another request with the same body holds the key and has not answered yet.
    InProgress,
    /// Another request with the same body already answered: send its answer again.
    Done {
        /// The answer's status code.
        status: u16,
        /// The answer's body.
        body: Vec<u8>,
    },
    /// The key was used with another body, or on another route.
    Mismatch,
}

/// A key's row: method, route, request hash, state, answer status and body.
type KeyRow = (
    String,
    String,
    Vec<u8>,
    String,
    Option<i32>,
    Option<Vec<u8>>,
);

/// Claims `key` in `scope` for a request to `route` whose body hashes to `request_hash`. A row
/// older than `ttl` is expired and replaced in the same statement (an upsert whose update is
/// conditional), so that one database statement decides, never a read then a write.
pub async fn claim(
    pool: &PgPool,
    scope: &str,
    key: &str,
    method: &str,
    route: &str,
    request_hash: &[u8],
    ttl: Duration,
) -> Result<Claim, DbError> {
    let ttl_secs = ttl.as_secs_f64();
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (scope, key, method, route, request_hash)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (scope, key) DO UPDATE
            SET method = EXCLUDED.method, route = EXCLUDED.route,
                request_hash = EXCLUDED.request_hash, state = 'in_progress',
                response_status = NULL, response_body = NULL, created_at = now()
          WHERE idempotency_keys.created_at < now() - make_interval(secs => $6)
         RETURNING 1",
    )
    .bind(scope)
    .bind(key)
    .bind(method)
    .bind(route)
    .bind(request_hash)
    .bind(ttl_secs)
    .fetch_optional(pool)
    .await?;
    if claimed.is_some() {
        return Ok(Claim::Claimed);
    }
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT method, route, request_hash, state, response_status, response_body
               FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        // Purged between the two statements: as if held (the client retries).
        None => Claim::InProgress,
        Some((m, r, hash, ..)) if m != method || r != route || hash != request_hash => {
            Claim::Mismatch
        }
        Some((_, _, _, state, Some(status), Some(body))) if state == "done" => Claim::Done {
            status: u16::try_from(status).unwrap_or(500),
            body,
        },
        Some(_) => Claim::InProgress,
    })
}

/// Stores the answer of the request that claimed the key.
pub async fn complete(
    pool: &PgPool,
    scope: &str,
    key: &str,
    status: u16,
    body: &[u8],
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE idempotency_keys
            SET state = 'done', response_status = $3, response_body = $4
          WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(i32::from(status))
    .bind(body)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives the key up (the request failed in a way a retry may not: a 5xx), so that a retry
/// with it acts again.
pub async fn release(pool: &PgPool, scope: &str, key: &str) -> Result<(), DbError> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND state = 'in_progress'",
    )
    .bind(scope)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes the keys older than `ttl`; returns how many.
pub async fn purge(pool: &PgPool, ttl: Duration) -> Result<u64, DbError> {
    let done = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
