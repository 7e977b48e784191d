//! Building a workspace's image from its Dockerfile, with the build log streamed as it comes
//! (see [`super::build_log`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::BuildImageOptions;
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::build_log::{self, BuildLog};
use super::{BuildSummary, Runtime, RuntimeError, context};
use crate::db::jobs;
use crate::model::{Workspace, WorkspaceId};
use crate::output::{LineSplitter, MAX_LINE_BYTES};

impl Runtime {
    /// Builds the image from the workspace's Dockerfile, streaming the log (see [`build_log`]).
    pub(super) async fn build(
        &self,
        pool: &PgPool,
        docker: &Docker,
        workspace: &Workspace,
    ) -> Result<BuildSummary, RuntimeError> {
        let started = Instant::now();
        let _building = BuildingMark::new(&self.building, workspace.id);
        let root = PathBuf::from(&workspace.path);
        let (context_dir, tarball) = tokio::task::spawn_blocking(move || {
            let dir = context::find_context_dir(&root)?;
            let tarball = context::tar_context(&dir)?;
            Ok::<_, RuntimeError>((dir, tarball))
        })
        .await
        .map_err(|e| RuntimeError::Context(format!("the context task failed: {e}")))??;
        let context_dir = context_dir.display().to_string();
        let image = self.image_name(workspace.id);

        let job_id = jobs::latest_id_for_workspace(pool, workspace.id).await?;
        let (sink, writer) = match job_id {
            Some(job_id) => {
                let (tx, rx) = mpsc::channel(256);
                let writer = tokio::spawn(build_log::write_events(pool.clone(), job_id, rx));
                (Some(tx), Some(writer))
            }
            None => (None, None),
        };
        let mut log = BuildLog::new(sink, self.settings.max_log_lines);
        log.event(build_log::started_event(&image, &context_dir))
            .await;
        tracing::info!(workspace_id = %workspace.id, %image, %context_dir, bytes = tarball.len(), "building runtime image");

        let options = BuildImageOptions {
            t: Some(image.clone()),
            rm: true,
            forcerm: true,
            labels: Some(self.labels(workspace.id)),
            ..Default::default()
        };
        let mut stream = docker.build_image(
            options,
            None,
            Some(bollard::body_full(bytes::Bytes::from(tarball))),
        );
        let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
        let mut image_id = None;
        let mut failure: Option<RuntimeError> = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(id) = info.aux.and_then(|aux| aux.id) {
                        image_id = Some(id);
                    }
                    if let Some(text) = info.stream {
                        for line in splitter.push(text.as_bytes()) {
                            log.line(line).await;
                        }
                    }
                    if let Some(status) = info.status {
                        log.line(status).await;
                    }
                }
                Err(DockerError::DockerStreamError { error }) => {
                    failure = Some(RuntimeError::BuildFailed {
                        message: error.trim().to_owned(),
                        log_tail: Vec::new(),
                    });
                    break;
                }
                Err(e) => {
                    failure = Some(match self.classify(e) {
                        RuntimeError::Docker(message) => RuntimeError::BuildFailed {
                            message: message.trim().to_owned(),
                            log_tail: Vec::new(),
                        },
                        other => other,
                    });
                    break;
                }
            }
        }
        drop(stream);
        if let Some(rest) = splitter.finish() {
            log.line(rest).await;
        }
        if let Some(RuntimeError::BuildFailed { message, .. }) = &failure {
            log.line(format!("[otter] build failed: {message}")).await;
        }
        if failure.is_none() && image_id.is_none() {
            image_id = self.image_id(docker, &image).await?;
            if image_id.is_none() {
                failure = Some(RuntimeError::BuildFailed {
                    message: log
                        .last_line()
                        .unwrap_or("the engine reported no image")
                        .to_owned(),
                    log_tail: Vec::new(),
                });
            }
        }
        let error_text = failure.as_ref().map(ToString::to_string);
        log.finish(build_log::finished_event(
            &image,
            image_id.as_deref(),
            error_text.as_deref(),
            log.total(),
        ))
        .await;
        if let Some(writer) = writer {
            // The events are in PostgreSQL before the answer leaves.
            let _ = writer.await;
        }
        match failure {
            Some(RuntimeError::BuildFailed { message, .. }) => {
                tracing::info!(workspace_id = %workspace.id, %image, error = %message, "runtime image build failed");
                Err(RuntimeError::BuildFailed {
                    message,
                    log_tail: log.tail(),
                })
            }
            Some(other) => Err(other),
            None => Ok(BuildSummary {
                image,
                image_id: image_id.unwrap_or_default(),
                context_dir,
                log_lines: log.total(),
                log_tail: log.tail(),
                job_id,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}

/// Marks a workspace as building while alive.
struct BuildingMark<'a> {
    set: &'a StdMutex<HashSet<WorkspaceId>>,
    id: WorkspaceId,
}

impl<'a> BuildingMark<'a> {
    fn new(set: &'a StdMutex<HashSet<WorkspaceId>>, id: WorkspaceId) -> Self {
        set.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        Self { set, id }
    }
}

impl Drop for BuildingMark<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}
