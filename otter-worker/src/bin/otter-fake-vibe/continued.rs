//! `-c/--continue`: the last session is kept in `$VIBE_HOME/logs/session/`, where vibe keeps
//! its sessions, so that a later run with `-c` goes on with it: same session id, the earlier
//! turns in its context, and, as in the capture, `--output json` prints the whole session while
//! `streaming` prints only the new turn.

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

fn path() -> PathBuf {
    vibe_home()
        .join("logs")
        .join("session")
        .join("otter-fake-vibe-last.json")
}

/// The last saved session, if there is one.
pub(crate) fn load() -> Option<Saved> {
    let saved: Value = serde_json::from_slice(&fs::read(path()).ok()?).ok()?;
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
    let path = path();
    if let Some(dir) = path.parent()
        && fs::create_dir_all(dir).is_ok()
    {
        let _ = fs::write(&path, saved.to_string());
    }
}
