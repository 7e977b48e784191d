//! Removing what the runtime made: one workspace's container and image, and, on a schedule
//! (the janitor), those of workspaces that no longer exist.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, RemoveContainerOptions, RemoveImageOptions,
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    CleanupReport, LABEL_MANAGED, LABEL_WORKSPACE, Removed, Runtime, RuntimeError, is_status,
};
use crate::db::workspaces;
use crate::model::WorkspaceId;

impl Runtime {
    /// Removes the workspace's container and image (when they exist).
    pub async fn remove_workspace(&self, id: WorkspaceId) -> Result<Removed, RuntimeError> {
        let _guard = self.lock(id).await;
        let docker = self.docker().await?;
        let container = self.remove_container(docker, id).await?;
        let image = self.remove_image(docker, &self.image_name(id)).await?;
        if container || image {
            tracing::info!(workspace_id = %id, container, image, "runtime container removed");
        }
        Ok(Removed { container, image })
    }

    pub(super) async fn remove_container(
        &self,
        docker: &Docker,
        id: WorkspaceId,
    ) -> Result<bool, RuntimeError> {
        match docker
            .remove_container(
                &self.container_name(id),
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn remove_image(&self, docker: &Docker, image: &str) -> Result<bool, RuntimeError> {
        match docker
            .remove_image(
                image,
                Some(RemoveImageOptions {
                    force: true,
                    ..Default::default()
                }),
                None,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            // Still used by a container this runtime does not manage: keep it.
            Err(e) if is_status(&e, 409) => {
                tracing::warn!(%image, error = %e, "runtime image kept: still in use");
                Ok(false)
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    /// Removes the containers and images labelled `otter.managed=true` (named with this
    /// runtime's prefixes, so that other Otter installations on the same engine are left
    /// alone) whose workspace no longer exists in `pool`.
    pub async fn cleanup_orphans(&self, pool: &PgPool) -> Result<CleanupReport, RuntimeError> {
        let docker = self.docker().await?;
        let filters = HashMap::from([("label".to_owned(), vec![format!("{LABEL_MANAGED}=true")])]);
        let containers = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.classify(e))?;
        // Only names of exactly this runtime's shape, `<prefix>-<uuid>`: the containers of an
        // installation whose prefix merely starts with ours are not ours.
        let container_prefix = format!("/{}-", self.settings.container_prefix);
        let ours: Vec<(String, Option<WorkspaceId>)> = containers
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.into_iter().find(|n| {
                    n.strip_prefix(&container_prefix)
                        .is_some_and(|rest| rest.parse::<WorkspaceId>().is_ok())
                })?;
                let workspace = c
                    .labels
                    .and_then(|l| l.get(LABEL_WORKSPACE).and_then(|v| v.parse().ok()));
                Some((name.trim_start_matches('/').to_owned(), workspace))
            })
            .collect();

        let images = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.classify(e))?;
        let image_prefix = format!("{}-", self.settings.image_prefix.to_lowercase());
        let our_images: Vec<(String, Option<WorkspaceId>)> = images
            .into_iter()
            .flat_map(|i| {
                let workspace = i.labels.get(LABEL_WORKSPACE).and_then(|v| v.parse().ok());
                i.repo_tags
                    .into_iter()
                    .filter(|t| {
                        t.strip_prefix(&image_prefix)
                            .map(|rest| rest.split_once(':').map_or(rest, |(name, _)| name))
                            .is_some_and(|rest| rest.parse::<WorkspaceId>().is_ok())
                    })
                    .map(move |t| (t, workspace))
            })
            .collect();

        let ids: Vec<WorkspaceId> = ours
            .iter()
            .filter_map(|(_, w)| *w)
            .chain(our_images.iter().filter_map(|(_, w)| *w))
            .collect();
        let existing: HashSet<WorkspaceId> = workspaces::existing_ids(pool, &ids)
            .await?
            .into_iter()
            .collect();
        let orphan = |w: &Option<WorkspaceId>| w.is_none_or(|w| !existing.contains(&w));

        let mut report = CleanupReport::default();
        for (name, workspace) in &ours {
            if !orphan(workspace) {
                report.containers_kept += 1;
                continue;
            }
            match docker
                .remove_container(
                    name,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                Ok(()) => report.containers_removed.push(name.clone()),
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(self.classify(e)),
            }
        }
        for (tag, workspace) in &our_images {
            if orphan(workspace) && self.remove_image(docker, tag).await? {
                report.images_removed.push(tag.clone());
            }
        }
        if !report.containers_removed.is_empty() || !report.images_removed.is_empty() {
            tracing::info!(
                containers = ?report.containers_removed,
                images = ?report.images_removed,
                "orphaned runtime containers removed"
            );
        }
        Ok(report)
    }

    /// Runs [`Runtime::cleanup_orphans`] every `interval` (the first time after one interval)
    /// until `shutdown`, so a long-running machine does not fill up with the containers of
    /// deleted workspaces.
    pub fn spawn_janitor(
        self: Arc<Self>,
        pool: PgPool,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                if let Err(e) = self.cleanup_orphans(&pool).await {
                    tracing::warn!(error = %e, "runtime cleanup failed; will retry");
                }
            }
        })
    }
}
