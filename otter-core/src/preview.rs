//! Preview URLs: where the app a job built can be seen. vibe posts one while it runs (Otter's
//! instructions tell it how), an operator may post one later; either way the URL is checked,
//! stored on the job and announced by a `preview_url_set` event, in one transaction.

use serde_json::json;
use sqlx::PgPool;

use crate::db::{DbError, events, jobs};
use crate::model::{Job, JobId, NewEvent, kinds};

/// Longest preview URL accepted, in bytes.
pub const MAX_PREVIEW_URL_BYTES: usize = 2048;

/// Why a preview URL was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// The URL is not acceptable; the message says why.
    #[error("preview_url {0}")]
    Invalid(String),
    /// The database refused or failed (an unknown job is `NotFound`).
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A checked preview URL: `http` or `https`, with a host, no credentials, at most
/// [`MAX_PREVIEW_URL_BYTES`], no whitespace or control characters. Kept in its normalized form
/// (`http://localhost:3000` becomes `http://localhost:3000/`), so that what is stored is exactly
/// what a browser would open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewUrl(String);

impl PreviewUrl {
    /// Checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, PreviewError> {
        let invalid = |why: &str| PreviewError::Invalid(why.to_owned());
        if raw.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if raw.len() > MAX_PREVIEW_URL_BYTES {
            return Err(invalid(&format!(
                "is longer than {MAX_PREVIEW_URL_BYTES} bytes"
            )));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("must not contain whitespace or control characters"));
        }
        let url = url::Url::parse(raw).map_err(|e| {
            invalid(&format!(
                "is not a valid URL ({e}): expected http://host:port"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(&format!(
                "must use http or https, not {:?}",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("must not contain credentials (user:password@)"));
        }
        let normalized = url.as_str();
        if normalized.len() > MAX_PREVIEW_URL_BYTES {
            return Err(invalid(&format!(
                "is longer than {MAX_PREVIEW_URL_BYTES} bytes once normalized"
            )));
        }
        Ok(Self(normalized.to_owned()))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Stores `url` on job `id` (in any state) and writes its `preview_url_set` event, in one
/// transaction; returns the job.
#[tracing::instrument(skip_all, fields(job_id = %id), err(level = "debug"))]
pub async fn set_preview_url(pool: &PgPool, id: JobId, url: &PreviewUrl) -> Result<Job, DbError> {
    let mut tx = pool.begin().await?;
    events::lock_job(&mut tx, id).await?;
    let updated = sqlx::query("UPDATE jobs SET preview_url = $2 WHERE id = $1")
        .bind(id)
        .bind(url.as_str())
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(DbError::NotFound("job"));
    }
    let event = NewEvent::new(
        kinds::PREVIEW_URL_SET,
        json!({ "preview_url": url.as_str() }),
    );
    events::append(&mut tx, id, &[event]).await?;
    tx.commit().await?;
    jobs::get(pool, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_are_kept_normalized() {
        for (raw, want) in [
            ("http://localhost:3000", "http://localhost:3000/"),
            (
                "https://app.example.com/path?q=1",
                "https://app.example.com/path?q=1",
            ),
            ("HTTP://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
            ("http://[::1]:5173", "http://[::1]:5173/"),
        ] {
            assert_eq!(PreviewUrl::parse(raw).expect(raw).as_str(), want);
        }
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for (raw, needle) in [
            ("", "empty"),
            ("localhost:3000", "http"),
            ("ftp://host/", "http or https"),
            ("javascript:alert(1)", "http or https"),
            ("file:///etc/passwd", "http or https"),
            ("http://user:pw@host/", "credentials"),
            ("http://user@host/", "credentials"),
            ("http:// host/", "whitespace"),
            ("http://ho\nst/", "whitespace"),
            ("http://", "valid URL"),
            ("not a url", "whitespace"),
            ("nourl", "valid URL"),
        ] {
            let err = PreviewUrl::parse(raw).expect_err(raw).to_string();
            assert!(err.starts_with("preview_url"), "{raw}: {err}");
            assert!(err.contains(needle), "{raw}: {err}");
        }
        let long = format!("http://h/{}", "a".repeat(MAX_PREVIEW_URL_BYTES));
        assert!(PreviewUrl::parse(&long).is_err());
    }
}
