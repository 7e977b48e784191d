//! `GET /v1/workspaces/{id}/tree` and `GET /v1/workspaces/{id}/file`: a workspace's files for a
//! frontend's file explorer. Paths are relative to the workspace root and never leave it
//! (`otter_core::files` decides; this module maps HTTP to it).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use otter_core::db::workspaces;
use otter_core::files::{self, FileContent, RelPath, Tree};
use otter_core::model::WorkspaceId;
use serde::Deserialize;

use crate::error::{AppError, AppJson, AppPath, AppQuery, Result};
use crate::state::AppState;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces/{id}/tree", get(get_tree))
        .route("/v1/workspaces/{id}/file", get(get_file))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TreeQuery {
    /// Directory to list, relative to the root (default: the root).
    #[serde(default)]
    path: String,
    /// Levels to list (1..=16, default 1).
    depth: Option<u32>,
}

async fn get_tree(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppQuery(q): AppQuery<TreeQuery>,
) -> Result<AppJson<Tree>> {
    let depth = q.depth.unwrap_or(1);
    if !(1..=files::MAX_TREE_DEPTH).contains(&depth) {
        return Err(AppError::Validation(format!(
            "depth must be between 1 and {}",
            files::MAX_TREE_DEPTH
        )));
    }
    let rel = RelPath::parse(&q.path)?;
    let root = workspace_root(&state, id).await?;
    let tree = blocking(move || files::tree(&root, &rel, depth, files::MAX_TREE_ENTRIES)).await??;
    Ok(AppJson(tree))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileQuery {
    /// The file, relative to the root.
    path: String,
}

async fn get_file(
    State(state): State<AppState>,
    AppPath(id): AppPath<WorkspaceId>,
    AppQuery(q): AppQuery<FileQuery>,
) -> Result<AppJson<FileContent>> {
    let rel = RelPath::parse(&q.path)?;
    let root = workspace_root(&state, id).await?;
    let file = blocking(move || files::read_file(&root, &rel, files::MAX_FILE_BYTES)).await??;
    Ok(AppJson(file))
}

/// The workspace's directory, checked and held open (404 for an unknown workspace, 409 when its
/// directory is gone, was replaced or is no longer allowed).
async fn workspace_root(state: &AppState, id: WorkspaceId) -> Result<otter_core::beneath::Dir> {
    let workspace = workspaces::get(&state.db, id).await?;
    let config = state.config.clone();
    Ok(blocking(move || files::open_workspace(&config, &workspace.path)).await??)
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(format!("filesystem task failed: {e}")))
}
