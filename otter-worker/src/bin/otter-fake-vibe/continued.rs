//! `-c/--continue` and `--resume <id>`: every session is kept in `$VIBE_HOME/logs/session/`,
//! where vibe keeps its sessions (the last one also as such), so that a later run with `-c`
//! (the last) or `--resume <id>` (that one) goes on with it: same session id, the earlier turns
//! in its context, and, as in the captures, `--output json` prints the whole session while
//! `streaming` prints only the new turn. An id never saved is vibe's `Session not found`.

use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::export::vibe_home;
use crate::json::J;

/// A session as the next `-c` run needs it.
pub(crate) struct Saved {
    pub(crate) session_id: String,
    /// The characters of prompt and history so far (the next model call's input tokens).
    pub(crate) context_chars: u64,
    /// Each entry rendered as `--output json` prints it, at depth 1 of the array.
    pub(crate) entries: Vec<J>,
}

fn dir() -> PathBuf {
    vibe_home().join("logs").join("session")
}

fn path() -> PathBuf {
    dir().join("otter-fake-vibe-last.json")
}

/// Where session `id` is kept; `None` for an id that is no file name (vibe's are UUIDs).
fn path_of(id: &str) -> Option<PathBuf> {
    let plain = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    plain.then(|| dir().join(format!("otter-fake-vibe-session-{id}.json")))
}

/// The last saved session, if there is one.
pub(crate) fn load() -> Option<Saved> {
    load_from(&path())
}

/// Session `id`, if it was saved.
pub(crate) fn load_id(id: &str) -> Option<Saved> {
    load_from(&path_of(id)?)
}

fn load_from(path: &std::path::Path) -> Option<Saved> {
    let saved: Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    Some(Saved {
        session_id: saved["session_id"].as_str()?.to_owned(),
        context_chars: saved["context_chars"].as_u64()?,
        entries: saved["entries"]
            .as_array()?
            .iter()
            .map(|e| e.as_str().map(|e| J::Raw(e.to_owned())))
            .collect::<Option<_>>()?,
    })
}

/// Keeps the session for the next `-c`; a `VIBE_HOME` that cannot be written is no error.
pub(crate) fn save(session_id: &str, context_chars: u64, entries: &[J]) {
    let rendered: Vec<String> = entries
        .iter()
        .map(|entry| {
            let mut text = String::new();
            entry.pretty(&mut text, 1);
            text
        })
        .collect();
    let saved = json!({
        "session_id": session_id,
        "context_chars": context_chars,
        "entries": rendered,
    });
    if fs::create_dir_all(dir()).is_ok() {
        let text = saved.to_string();
        let _ = fs::write(path(), &text);
        if let Some(own) = path_of(session_id) {
            let _ = fs::write(own, &text);
        }
    }
}
