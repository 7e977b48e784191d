//! Fair shares between projects (migration 90): the turn a submit gives a job (`queue_at`),
//! which orders the claimable jobs, and a project's `max_running`, which the claim keeps.

use std::time::Duration;

use otter_core::db::jobs::{self, Claim, Claimant, Finish, Lease, NewJob, RunEnd};
use otter_core::db::{projects, workspaces};
use otter_core::model::{Job, JobId, ProjectId, WorkspaceId};
use sqlx::PgPool;

const TTL: Duration = Duration::from_secs(30);

async fn project(pool: &PgPool, max_running: Option<i32>) -> ProjectId {
    projects::insert(pool, "p", None, None, max_running)
        .await
        .unwrap()
        .id
}

/// A job of `project` (if any), at `priority`, in a workspace of its own.
async fn submit(pool: &PgPool, project: Option<ProjectId>, priority: i32) -> Job {
    let id = WorkspaceId::new();
    let path = format!("/tmp/otter-sql-tests-{id}");
    let ws = workspaces::insert(pool, id, project, "ws", &path, &format!("{path}-home"))
        .await
        .unwrap();
    let new = NewJob {
        workspace: &ws,
        prompt: "p",
        priority,
        max_attempts: 1,
        parent_job_id: None,
        limits: Default::default(),
        model: None,
    };
    jobs::insert(pool, &new).await.unwrap()
}

/// The claimable jobs in claim order.
async fn claim_order(pool: &PgPool) -> Vec<JobId> {
    let mut entries = jobs::claimable(pool, None, 1000).await.unwrap();
    // Redis's order: the score, then the member.
    entries.sort_by(|a, b| {
        let (sa, sb) = (
            otter_core::queue::score(a.priority, a.queue_at),
            otter_core::queue::score(b.priority, b.queue_at),
        );
        sa.total_cmp(&sb)
            .then(a.id.to_string().cmp(&b.id.to_string()))
    });
    entries.into_iter().map(|e| e.id).collect()
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn projects_take_turns_and_priority_still_wins(pool: PgPool) {
    let flood = project(&pool, None).await;
    let mut flooded = Vec::new();
    for _ in 0..50 {
        flooded.push(submit(&pool, Some(flood), 0).await.id);
    }
    let single = submit(&pool, Some(project(&pool, None).await), 0).await.id;
    let second_of_two = {
        let other = project(&pool, None).await;
        submit(&pool, Some(other), 0).await;
        submit(&pool, Some(other), 0).await.id
    };
    let without_project = submit(&pool, None, 0).await.id;
    let urgent = submit(&pool, Some(flood), 5).await.id;

    let order = claim_order(&pool).await;
    let place = |id: JobId| order.iter().position(|o| *o == id).unwrap();
    // Priority first, even for the flooding project's job.
    assert_eq!(place(urgent), 0, "{order:?}");
    // Then the first queued job of each project, the flood's first included, in submission
    // order; the jobs without a project count as one project.
    assert_eq!(place(flooded[0]), 1);
    assert!(
        place(single) < 5,
        "a one-job project waits behind the flood: {}",
        place(single)
    );
    assert!(place(without_project) < 6);
    // A project's second job comes in the second round: after every project's first, before the
    // flood's third.
    assert!(place(second_of_two) > place(single));
    assert!(place(second_of_two) < place(flooded[2]));
    // Within a project, submission order.
    let flood_places: Vec<usize> = flooded.iter().map(|id| place(*id)).collect();
    assert!(
        flood_places.windows(2).all(|w| w[0] < w[1]),
        "{flood_places:?}"
    );
    // The queue lists them in claim order too.
    let listed = jobs::list_queue(
        &pool,
        None,
        otter_core::db::PageRequest {
            limit: 500,
            offset: 0,
        },
    )
    .await
    .unwrap();
    let listed: Vec<JobId> = listed.items.iter().map(|j| j.id).collect();
    assert_eq!(listed.len(), order.len());
    assert_eq!(listed[0], urgent);
    assert_eq!(listed[1], flooded[0]);
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_job_of_an_idle_project_takes_its_turn_at_once(pool: PgPool) {
    let p = project(&pool, None).await;
    let first = submit(&pool, Some(p), 0).await;
    assert_eq!(first.queue_at, first.created_at);
    let second = submit(&pool, Some(p), 0).await;
    assert!(second.queue_at >= first.queue_at + chrono::Duration::hours(1));
    // Once the project has nothing queued, its next job is not held back for its past.
    for job in [&first, &second] {
        let lease = claimed(&pool, job.id, &Claimant::new("w", TTL)).await;
        end(&pool, &lease).await;
    }
    let third = submit(&pool, Some(p), 0).await;
    assert_eq!(third.queue_at, third.created_at);
    // The job as read back says the same.
    assert_eq!(
        jobs::get(&pool, third.id).await.unwrap().queue_at,
        third.queue_at
    );
}

async fn claimed(pool: &PgPool, id: JobId, claimant: &Claimant<'_>) -> Lease {
    match jobs::claim(pool, id, claimant).await.unwrap() {
        Claim::Claimed { lease, .. } => lease,
        other => panic!("not claimed: {other:?}"),
    }
}

async fn end(pool: &PgPool, lease: &Lease) {
    jobs::finish(pool, lease, &Finish::new(RunEnd::Succeeded, Some(0)))
        .await
        .unwrap()
        .expect("the lease is held");
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn max_running_holds_a_projects_jobs_back(pool: PgPool) {
    let limited = project(&pool, Some(1)).await;
    let (a, b) = (
        submit(&pool, Some(limited), 0).await,
        submit(&pool, Some(limited), 0).await,
    );
    let free = submit(&pool, Some(project(&pool, None).await), 0).await;
    let claimant = Claimant::new("w", TTL);
    let lease = claimed(&pool, a.id, &claimant).await;
    assert!(matches!(
        jobs::claim(&pool, b.id, &claimant).await.unwrap(),
        Claim::ProjectBusy
    ));
    // Held back, not claimed: still queued, no attempt used.
    let held = jobs::get(&pool, b.id).await.unwrap();
    assert_eq!((held.status.as_str(), held.attempts), ("queued", 0));
    // Another project is not held.
    claimed(&pool, free.id, &claimant).await;
    // The end of the running one makes room, and the project's next job is listed to be pushed.
    let next = jobs::claimable_in_project(&pool, limited, None, 8)
        .await
        .unwrap();
    assert_eq!(next.iter().map(|e| e.id).collect::<Vec<_>>(), [b.id]);
    end(&pool, &lease).await;
    claimed(&pool, b.id, &claimant).await;
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn the_workers_default_limit_applies_to_projects_without_one(pool: PgPool) {
    let (unset, own) = (project(&pool, None).await, project(&pool, Some(2)).await);
    let defaulted = Claimant {
        project_max_running: Some(1),
        ..Claimant::new("w", TTL)
    };
    let u: Vec<Job> = vec![
        submit(&pool, Some(unset), 0).await,
        submit(&pool, Some(unset), 0).await,
    ];
    claimed(&pool, u[0].id, &defaulted).await;
    assert!(matches!(
        jobs::claim(&pool, u[1].id, &defaulted).await.unwrap(),
        Claim::ProjectBusy
    ));
    // A project's own max_running wins over the default.
    let o: Vec<Job> = vec![
        submit(&pool, Some(own), 0).await,
        submit(&pool, Some(own), 0).await,
        submit(&pool, Some(own), 0).await,
    ];
    claimed(&pool, o[0].id, &defaulted).await;
    claimed(&pool, o[1].id, &defaulted).await;
    assert!(matches!(
        jobs::claim(&pool, o[2].id, &defaulted).await.unwrap(),
        Claim::ProjectBusy
    ));
    // Without a limit anywhere, a project's jobs are never listed to be pushed for it.
    let none = project(&pool, None).await;
    submit(&pool, Some(none), 0).await;
    assert!(
        jobs::claimable_in_project(&pool, none, None, 8)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn concurrent_claims_never_exceed_max_running(pool: PgPool) {
    let limited = project(&pool, Some(2)).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(submit(&pool, Some(limited), 0).await.id);
    }
    // Twelve claims at once, on twelve connections.
    let claims = ids.iter().map(|id| {
        let (pool, id) = (pool.clone(), *id);
        tokio::spawn(async move {
            let claimant = Claimant::new("w", TTL);
            matches!(
                jobs::claim(&pool, id, &claimant).await.unwrap(),
                Claim::Claimed { .. }
            )
        })
    });
    let mut won = 0;
    for claim in claims {
        won += usize::from(claim.await.unwrap());
    }
    assert_eq!(won, 2);
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE project_id = $1 AND status = 'running'",
    )
    .bind(limited)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(running, 2);
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_run_sums_its_projects_usage_only_when_the_project_has_a_budget(pool: PgPool) {
    let free = projects::insert(&pool, "free", None, None, None)
        .await
        .unwrap();
    assert!(
        projects::usage_if_budgeted(&pool, free.id)
            .await
            .unwrap()
            .is_none()
    );
    let capped = projects::insert(&pool, "capped", None, Some(2.5), None)
        .await
        .unwrap();
    let usage = projects::usage_if_budgeted(&pool, capped.id)
        .await
        .unwrap()
        .expect("a budget's usage");
    assert_eq!(usage.budget_usd, Some(2.5));
    assert_eq!(usage.remaining_usd, Some(2.5));
    assert!(matches!(
        projects::usage_if_budgeted(&pool, ProjectId::new()).await,
        Err(otter_core::DbError::NotFound("project"))
    ));
}
