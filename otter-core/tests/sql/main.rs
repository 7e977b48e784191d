//! The contracts of Otter's SQL functions, each test on a fresh database migrated by
//! `otter_core::MIGRATOR` (`#[sqlx::test]`, on `DATABASE_URL`): the job state machine and the
//! event ids, a job's checkpoints and a restore's hold on a workspace.

mod checkpoints;
mod event_ids;
mod fair_shares;
mod job_states;
mod retention;

use otter_core::db::jobs::{self, NewJob};
use otter_core::db::workspaces;
use otter_core::model::{Job, WorkspaceId};
use sqlx::PgPool;

/// A new job, queued, in a workspace of its own.
async fn queued_job(pool: &PgPool, max_attempts: i32) -> Job {
    let id = WorkspaceId::new();
    let path = format!("/tmp/otter-sql-tests-{id}");
    let ws = workspaces::insert(pool, id, None, "ws", &path, &format!("{path}-home"))
        .await
        .unwrap();
    let new = NewJob {
        workspace: &ws,
        prompt: "p",
        priority: 0,
        max_attempts,
        parent_job_id: None,
        limits: Default::default(),
        model: None,
    };
    jobs::insert(pool, &new).await.unwrap()
}
