//! `job_checkpoints` and a restore's hold on a workspace (migration `20261202000041`), through
//! `otter_core::db::checkpoints`: the records are fenced by the run's lease, a retried job keeps
//! its first checkpoint, and while a restore holds a workspace no job of it starts (nor can a
//! restore begin while one runs).

use std::time::Duration;

use otter_core::checkpoint::{CheckpointId, Summary};
use otter_core::db::checkpoints::{self, AfterCheckpoint, BeforeRecorded, WorkspaceHold};
use otter_core::db::jobs::{self, Claim, Finish, RunEnd};
use otter_core::db::{DbError, workspaces};
use otter_core::model::{JobStatus, WorkspaceId};
use sqlx::PgPool;
use uuid::Uuid;

use super::queued_job;

const TTL: Duration = Duration::from_secs(30);

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_retried_job_keeps_its_first_checkpoint_and_a_lost_lease_records_nothing(pool: PgPool) {
    let job = queued_job(&pool, 3).await;
    let Claim::Claimed { lease, .. } = jobs::claim(&pool, job.id, &jobs::Claimant::new("w", TTL))
        .await
        .unwrap()
    else {
        panic!("not claimed");
    };
    let first = CheckpointId(Uuid::new_v4());
    assert_eq!(
        checkpoints::record_before(&pool, &lease, Some(first), None)
            .await
            .unwrap(),
        BeforeRecorded::Recorded(Some(first))
    );
    let after = CheckpointId(Uuid::new_v4());
    let summary = Summary {
        files_changed: 3,
        additions: 4,
        deletions: 5,
    };
    // The attempt fails and is retried (its finish records the checkpoint after it): the
    // second attempt's before is not the job's.
    let failed = Finish {
        checkpoint: Some(AfterCheckpoint {
            checkpoint: Some(after),
            error: None,
            summary: Some(summary),
        }),
        ..Finish::new(
            RunEnd::Failed {
                error: "exit 2".into(),
                retryable: true,
            },
            Some(2),
        )
    };
    assert_eq!(
        jobs::finish(&pool, &lease, &failed).await.unwrap(),
        Some(JobStatus::Queued)
    );
    // The finished attempt's lease no longer writes.
    assert_eq!(
        checkpoints::record_before(&pool, &lease, Some(CheckpointId(Uuid::new_v4())), None)
            .await
            .unwrap(),
        BeforeRecorded::LeaseLost
    );
    let late = Finish {
        checkpoint: Some(AfterCheckpoint {
            error: Some("late".into()),
            ..Default::default()
        }),
        ..Finish::new(RunEnd::Succeeded, Some(0))
    };
    assert_eq!(jobs::finish(&pool, &lease, &late).await.unwrap(), None);
    let Claim::Claimed { lease, .. } = jobs::claim(&pool, job.id, &jobs::Claimant::new("w", TTL))
        .await
        .unwrap()
    else {
        panic!("not claimed again");
    };
    assert_eq!(
        checkpoints::record_before(&pool, &lease, Some(CheckpointId(Uuid::new_v4())), None)
            .await
            .unwrap(),
        BeforeRecorded::Recorded(Some(first)),
        "the first attempt's checkpoint is the job's"
    );
    let recorded = checkpoints::get(&pool, job.id).await.unwrap().unwrap();
    assert_eq!(
        (recorded.before_id, recorded.after_id, recorded.error),
        (Some(first), Some(after), None)
    );
    let read = jobs::get(&pool, job.id).await.unwrap();
    // Not finished yet: the output (and its summary) comes with the end.
    assert!(read.output.is_none());
    // An after checkpoint that could not be taken says why, and the summary is unknown.
    let finish = Finish {
        checkpoint: Some(AfterCheckpoint {
            error: Some("disk full".into()),
            ..Default::default()
        }),
        output: Some(Default::default()),
        ..Finish::new(RunEnd::Succeeded, Some(0))
    };
    jobs::finish(&pool, &lease, &finish).await.unwrap();
    let recorded = checkpoints::get(&pool, job.id).await.unwrap().unwrap();
    assert_eq!(
        (recorded.after_id, recorded.error.as_deref()),
        (None, Some("disk full"))
    );
    let output = jobs::get(&pool, job.id).await.unwrap().output.unwrap();
    assert_eq!(output.files_changed, None);
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_finished_job_s_output_carries_its_change_summary(pool: PgPool) {
    let job = queued_job(&pool, 1).await;
    let Claim::Claimed { lease, .. } = jobs::claim(&pool, job.id, &jobs::Claimant::new("w", TTL))
        .await
        .unwrap()
    else {
        panic!("not claimed");
    };
    let (before, after) = (CheckpointId(Uuid::new_v4()), CheckpointId(Uuid::new_v4()));
    checkpoints::record_before(&pool, &lease, Some(before), None)
        .await
        .unwrap();
    let summary = Summary {
        files_changed: 3,
        additions: 3,
        deletions: 3,
    };
    let mut finish = Finish::new(RunEnd::Succeeded, Some(0));
    finish.output = Some(Default::default());
    finish.checkpoint = Some(AfterCheckpoint {
        checkpoint: Some(after),
        error: None,
        summary: Some(summary),
    });
    jobs::finish(&pool, &lease, &finish).await.unwrap();
    let output = jobs::get(&pool, job.id).await.unwrap().output.unwrap();
    assert_eq!(
        (output.files_changed, output.additions, output.deletions),
        (Some(3), Some(3), Some(3))
    );
    let history = jobs::list_history(
        &pool,
        Default::default(),
        otter_core::db::PageRequest::new(None, None).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        history.items[0].output.as_ref().unwrap().files_changed,
        Some(3)
    );
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn no_job_of_a_held_workspace_starts_and_a_running_one_refuses_the_hold(pool: PgPool) {
    let held = queued_job(&pool, 1).await;
    let other = queued_job(&pool, 1).await;
    let hold = WorkspaceHold::take(&pool, held.workspace_id).await.unwrap();
    // A second restore of the same workspace is refused.
    let err = WorkspaceHold::take(&pool, held.workspace_id)
        .await
        .err()
        .expect("a second hold");
    assert!(
        matches!(err, DbError::Conflict(ref m) if m.contains("busy")),
        "{err:?}"
    );
    assert!(
        matches!(
            jobs::claim(&pool, held.id, &jobs::Claimant::new("w", TTL))
                .await
                .unwrap(),
            Claim::WorkspaceBusy
        ),
        "a job of a held workspace waits"
    );
    assert_eq!(
        jobs::get(&pool, held.id).await.unwrap().status,
        JobStatus::Queued
    );
    // Other workspaces are not held up.
    let Claim::Claimed { .. } = jobs::claim(&pool, other.id, &jobs::Claimant::new("w", TTL))
        .await
        .unwrap()
    else {
        panic!("another workspace's job waits");
    };
    hold.release().await;
    let Claim::Claimed { .. } = jobs::claim(&pool, held.id, &jobs::Claimant::new("w", TTL))
        .await
        .unwrap()
    else {
        panic!("the job does not start once the hold is released");
    };
    // Now a job of the workspace runs: no restore may begin.
    let err = WorkspaceHold::take(&pool, held.workspace_id)
        .await
        .err()
        .expect("a hold while a job runs");
    assert!(
        matches!(err, DbError::Conflict(ref m) if m.contains("is running")),
        "{err:?}"
    );
    // A hold whose holder goes away without releasing it (a crash) is gone with its
    // connection.
    let ws = WorkspaceId::new();
    workspaces::insert(&pool, ws, None, "ws", &format!("/tmp/otter-{ws}"), "/tmp/h")
        .await
        .unwrap();
    drop(WorkspaceHold::take(&pool, ws).await.unwrap());
    free_eventually(&pool, ws).await;
}

/// Waits (up to 10 s) until the workspace's hold can be taken again.
async fn free_eventually(pool: &PgPool, ws: WorkspaceId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match WorkspaceHold::take(pool, ws).await {
            Ok(hold) => return hold.release().await,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "the dropped hold is still held: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
