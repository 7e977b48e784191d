//! `otter_core::service` as an embedder calls it: the checks the API makes are made here, and
//! answered with typed errors, never a constraint violation of the tables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use otter_core::checkpoint::Checkpoints;
use otter_core::model::{JobStatus, ProjectId, WorkspaceId};
use otter_core::service::{self, CreateWorkspace, ServiceError, SubmitPrompt};
use otter_core::{Config, DbError, Queue};
use sqlx::PgPool;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("otter-service-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A configuration whose homes go under this directory and whose queue is this test's own.
    fn config(&self) -> Config {
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("{name} is not set: source scripts/env.sh"))
        };
        let vars: HashMap<String, String> = [
            ("OTTER_DATABASE_URL", var("DATABASE_URL")),
            ("OTTER_REDIS_URL", var("REDIS_URL")),
            (
                "OTTER_QUEUE_NAME",
                format!("service-{}", uuid::Uuid::new_v4().simple()),
            ),
            ("OTTER_VIBE_HOME_BASE", self.homes().display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Config::from_map(&vars).unwrap()
    }

    fn homes(&self) -> PathBuf {
        self.0.join("homes")
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_workspace_of_an_unknown_project_is_not_found_and_nothing_is_made(pool: PgPool) {
    let scratch = Scratch::new();
    let config = scratch.config();
    let err = service::create_workspace(
        &pool,
        &config,
        CreateWorkspace {
            project_id: Some(ProjectId::new()),
            path: &scratch.path("ws"),
            create: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ServiceError::Db(DbError::NotFound("project"))),
        "{err:?}"
    );
    assert_eq!(entries(&scratch.homes()), 0, "no VIBE_HOME was left");

    let project = service::create_project(&pool, "p", None, Default::default())
        .await
        .unwrap();
    let ws = service::create_workspace(
        &pool,
        &config,
        CreateWorkspace {
            project_id: Some(project.id),
            path: &scratch.path("ws"),
            create: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(ws.project_id, Some(project.id));
}

#[sqlx::test(migrator = "otter_core::MIGRATOR")]
async fn a_workspace_is_deleted_in_one_call_once_its_jobs_allow_it(pool: PgPool) {
    let scratch = Scratch::new();
    let config = scratch.config();
    let queue = Queue::connect(config.redis_url.expose(), &config.queue_name)
        .await
        .unwrap();
    let store = Checkpoints::from_config(&config);
    let err = service::delete_workspace(&pool, None, &store, WorkspaceId::new(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::Db(DbError::NotFound("workspace"))),
        "{err:?}"
    );

    let ws = service::create_workspace(
        &pool,
        &config,
        CreateWorkspace {
            path: &scratch.path("ws"),
            create: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let job = service::submit_prompt(
        &pool,
        &queue,
        &config,
        SubmitPrompt {
            prompt: "hello",
            workspace_id: Some(ws.id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let refused = async |force| {
        let err = service::delete_workspace(&pool, None, &store, ws.id, force)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ServiceError::Db(DbError::Conflict(_))),
            "force {force}: {err:?}"
        );
    };
    // A queued job refuses the delete, even forced.
    refused(true).await;
    let job = service::cancel_job(&pool, &queue, job.id).await.unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    // A finished one, unless forced.
    refused(false).await;
    let isolation = otter_core::isolation::Isolation::from_config(&config).unwrap();
    let checkpoint = store.take(&isolation, ws.id, Path::new(&ws.path)).unwrap();
    // Not while a restore of its files is in progress.
    let restoring = otter_core::db::checkpoints::WorkspaceHold::take(&pool, ws.id)
        .await
        .unwrap();
    refused(true).await;
    restoring.release().await;
    assert!(
        Path::new(&ws.vibe_home).is_dir(),
        "a refused delete removes nothing"
    );

    let deleted = service::delete_workspace(&pool, None, &store, ws.id, true)
        .await
        .unwrap();
    assert_eq!(
        deleted,
        service::DeletedWorkspace {
            jobs_deleted: 1,
            vibe_home_removed: true,
            runtime: None,
            checkpoints_removed: true,
        }
    );
    assert!(
        store.load(ws.id, checkpoint.id).is_err(),
        "the workspace's checkpoints went with it"
    );
    assert!(!Path::new(&ws.vibe_home).exists());
    assert!(Path::new(&ws.path).is_dir(), "the user's directory stays");
    assert_eq!(queue.ready_len().await.unwrap(), 0, "the queue is empty");
}
