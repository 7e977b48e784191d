//! Comparing two checkpoints: the list of changed paths with their line counts, and a unified
//! diff in git's format (`diff --git`, `new file mode`, `deleted file mode`, quoted paths),
//! which `git apply` (and `git apply -R`) accepts.

use std::fmt::Write as _;

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

use super::store::Store;
use super::{CheckpointError, Entry, EntryKind, Manifest};

/// How a path changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeStatus {
    /// Not there before.
    Added,
    /// There before and after, with other content or mode.
    Modified,
    /// Not there after.
    Deleted,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The path, relative to the workspace.
    pub path: String,
    /// Added, modified or deleted.
    pub status: ChangeStatus,
    /// Lines added (0 for a binary file).
    pub additions: u64,
    /// Lines removed (0 for a binary file).
    pub deletions: u64,
    /// Either side is not text (it holds a NUL byte or is not UTF-8).
    pub binary: bool,
    /// Either side is over the size cap, so its content was not kept: no line counts or diff.
    pub too_large: bool,
}

/// A job's changes in numbers, for its output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Paths changed.
    pub files_changed: u64,
    /// Lines added.
    pub additions: u64,
    /// Lines removed.
    pub deletions: u64,
}

impl Summary {
    /// The totals of `changes`.
    pub fn of(changes: &[Change]) -> Self {
        Self {
            files_changed: changes.len() as u64,
            additions: changes.iter().map(|c| c.additions).sum(),
            deletions: changes.iter().map(|c| c.deletions).sum(),
        }
    }
}

/// A unified diff, perhaps cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// The diff text; when cut, it ends with a line starting `# otter: diff cut` that says where.
    pub text: String,
    /// It was cut at the size asked for.
    pub truncated: bool,
    /// Files changed.
    pub files: usize,
    /// Files whose diff is whole in `text`.
    pub files_shown: usize,
}

/// One side of a change: what was stored, or that the file was over the cap.
#[derive(Clone, Copy)]
enum Side<'a> {
    Absent,
    Stored(&'a Entry),
    TooLarge,
}

fn side<'a>(manifest: &'a Manifest, path: &str) -> Side<'a> {
    match manifest.files.get(path) {
        Some(entry) => Side::Stored(entry),
        None if manifest.skipped.contains_key(path) => Side::TooLarge,
        None => Side::Absent,
    }
}

/// Every path that differs between `before` and `after`, in path order.
fn changed<'a>(before: &'a Manifest, after: &'a Manifest) -> Vec<(&'a str, Side<'a>, Side<'a>)> {
    let mut paths: Vec<&str> = before
        .files
        .keys()
        .chain(before.skipped.keys())
        .chain(after.files.keys())
        .chain(after.skipped.keys())
        .map(String::as_str)
        .collect();
    paths.sort_unstable();
    paths.dedup();
    paths
        .into_iter()
        .filter_map(|path| {
            let (old, new) = (side(before, path), side(after, path));
            let same = match (old, new) {
                (Side::Absent, Side::Absent) => true,
                (Side::Stored(a), Side::Stored(b)) => super::same_content(a, b),
                (Side::TooLarge, Side::TooLarge) => {
                    before.skipped.get(path) == after.skipped.get(path)
                }
                _ => false,
            };
            (!same).then_some((path, old, new))
        })
        .collect()
}

/// A side's content as text, `None` when it is binary.
fn text(content: &[u8]) -> Option<&str> {
    if content.iter().take(8000).any(|b| *b == 0) {
        return None;
    }
    std::str::from_utf8(content).ok()
}

fn content(store: &Store, side: Side<'_>) -> Result<Option<Vec<u8>>, CheckpointError> {
    match side {
        Side::Stored(entry) => store.get(&entry.hash).map(Some),
        Side::Absent => Ok(Some(Vec::new())),
        Side::TooLarge => Ok(None),
    }
}

pub(super) fn changes(
    store: &Store,
    before: &Manifest,
    after: &Manifest,
) -> Result<Vec<Change>, CheckpointError> {
    changed(before, after)
        .into_iter()
        .map(|(path, old, new)| {
            let status = match (old, new) {
                (Side::Absent, _) => ChangeStatus::Added,
                (_, Side::Absent) => ChangeStatus::Deleted,
                _ => ChangeStatus::Modified,
            };
            let mut change = Change {
                path: path.to_owned(),
                status,
                additions: 0,
                deletions: 0,
                binary: false,
                too_large: matches!(old, Side::TooLarge) || matches!(new, Side::TooLarge),
            };
            if let (Some(a), Some(b)) = (content(store, old)?, content(store, new)?) {
                match (text(&a), text(&b)) {
                    (Some(a), Some(b)) => {
                        for c in TextDiff::from_lines(a, b).iter_all_changes() {
                            match c.tag() {
                                ChangeTag::Insert => change.additions += 1,
                                ChangeTag::Delete => change.deletions += 1,
                                ChangeTag::Equal => {}
                            }
                        }
                    }
                    _ => change.binary = true,
                }
            }
            Ok(change)
        })
        .collect()
}

/// git's mode of an entry.
fn mode(entry: &Entry) -> &'static str {
    match (entry.kind, entry.executable) {
        (EntryKind::Symlink, _) => "120000",
        (EntryKind::File, true) => "100755",
        (EntryKind::File, false) => "100644",
    }
}

/// `prefix` + `path` as git writes it in a header: in double quotes, with C escapes, when it
/// holds a quote, a backslash, a control character or a non-ASCII byte.
fn quoted(prefix: &str, path: &str) -> String {
    let plain = path
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        return format!("{prefix}{path}");
    }
    let mut out = String::from("\"");
    for b in prefix.bytes().chain(path.bytes()) {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push('"');
    out
}

/// The diff of one path.
fn file_diff(
    store: &Store,
    path: &str,
    old: Side<'_>,
    new: Side<'_>,
) -> Result<String, CheckpointError> {
    let (a, b) = (quoted("a/", path), quoted("b/", path));
    let mut out = format!("diff --git {a} {b}\n");
    match (old, new) {
        (Side::Absent, Side::Stored(e)) => {
            let _ = writeln!(out, "new file mode {}", mode(e));
        }
        (Side::Stored(e), Side::Absent) => {
            let _ = writeln!(out, "deleted file mode {}", mode(e));
        }
        (Side::Stored(x), Side::Stored(y)) if mode(x) != mode(y) => {
            let _ = writeln!(out, "old mode {}\nnew mode {}", mode(x), mode(y));
        }
        _ => {}
    }
    let (Some(old_content), Some(new_content)) = (content(store, old)?, content(store, new)?)
    else {
        out.push_str("# otter: over the size cap, content not kept\n");
        return Ok(out);
    };
    if old_content == new_content {
        return Ok(out);
    }
    let (Some(x), Some(y)) = (text(&old_content), text(&new_content)) else {
        let _ = writeln!(out, "Binary files {a} and {b} differ");
        return Ok(out);
    };
    let from = if matches!(old, Side::Absent) {
        "/dev/null".to_owned()
    } else {
        a
    };
    let to = if matches!(new, Side::Absent) {
        "/dev/null".to_owned()
    } else {
        b
    };
    let _ = writeln!(out, "--- {from}\n+++ {to}");
    let diff = TextDiff::from_lines(x, y);
    let mut unified = diff.unified_diff();
    unified.context_radius(3);
    for hunk in unified.iter_hunks() {
        let _ = write!(out, "{hunk}");
    }
    Ok(out)
}

pub(super) fn unified(
    store: &Store,
    before: &Manifest,
    after: &Manifest,
    only: Option<&str>,
    max_bytes: usize,
) -> Result<Diff, CheckpointError> {
    let paths: Vec<_> = changed(before, after)
        .into_iter()
        .filter(|(path, _, _)| only.is_none_or(|p| p == *path))
        .collect();
    let mut diff = Diff {
        text: String::new(),
        truncated: false,
        files: paths.len(),
        files_shown: 0,
    };
    for (path, old, new) in paths {
        let one = file_diff(store, path, old, new)?;
        if diff.text.len() + one.len() > max_bytes {
            // Whole files only, so that what is shown still applies; a first file that is
            // larger alone is cut at a line.
            if diff.files_shown == 0 {
                // Bytes, not `str`: `max_bytes` may fall inside a character; a newline never
                // does.
                let cut = one.as_bytes()[..max_bytes.min(one.len())]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                diff.text.push_str(&one[..cut]);
            }
            diff.truncated = true;
            let _ = writeln!(
                diff.text,
                "# otter: diff cut here at {max_bytes} bytes: {} of {} files shown whole; \
                 ask for one file with ?path=",
                diff.files_shown, diff.files
            );
            break;
        }
        diff.text.push_str(&one);
        diff.files_shown += 1;
    }
    Ok(diff)
}
