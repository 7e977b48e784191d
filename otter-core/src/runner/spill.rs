//! Where a pipe's lines go: straight to the consumer while the output budget allows, to a spill
//! file on disk when it does not, so that the reader of a child's pipe keeps reading.
//!
//! A child blocked on a full pipe is a child not working, so the reader must not stop for long
//! (at most 100 ms). Each line first takes its share of the run's in-memory output
//! budget ([`super::RunSpec::output_budget`]: its text plus what a waiting line costs beyond it,
//! [`LINE_OVERHEAD_BYTES`]) and goes to the consumer. When the budget is spent
//! (the database is behind, or down), the reader appends the rest of what it read to the spill
//! file instead and goes on reading; a forwarder task hands the spilled lines on, in order, as
//! the budget frees up. Once the forwarder has caught up, the reader sends directly again.
//!
//! - **Order.** Only one of the two sends at a time: the reader starts spilling when the budget
//!   is spent and stops only once the forwarder has handed on every spilled line.
//! - **Nothing lost.** The run ends only after the forwarder has handed everything on. If the
//!   file cannot be created or written, the reader waits for the forwarder to catch up and then
//!   falls back to waiting on the budget, as without a spill file.
//! - **Nothing left behind.** The file is unlinked as soon as it is created: the kernel frees
//!   it when the run ends, however the process ends. It is emptied whenever the forwarder
//!   catches up, and holds at most [`SpillSpec::max_bytes`]; past that the reader waits.

use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

use super::Line;
use crate::model::OutputStream;
use crate::output::MAX_LINE_BYTES;

/// Where a run's overflow may go ([`super::RunSpec::spill`]).
#[derive(Debug, Clone)]
pub struct SpillSpec {
    /// A directory on a local disk (the run's own directory). The file is created there and
    /// unlinked at once, so it never shows in a listing.
    pub dir: PathBuf,
    /// Most bytes of spilled lines kept at once; past it the reader waits for the forwarder.
    pub max_bytes: u64,
}

/// What a line costs beyond its text while it waits for its consumer, charged to the output
/// budget with the text ([`line_cost`]). Where it comes from, on x86-64 with glibc's malloc:
///
/// - in the channel: the consumer's item (`Line`, 48 bytes; the batcher's `output::Item`, 56), its
///   share of the channel's block header (tokio's unbounded channel allocates 32 slots at a
///   time, about 1 byte a slot), and malloc's rounding of the text's allocation (an 8-byte
///   header, 16-byte alignment, 32 bytes at least: up to 31 bytes);
/// - once the event batcher has it, instead: the encoded event (32 bytes), its permit (16), the
///   payload's JSON framing (`{"stream":"stderr","text":""}`, 29 bytes) and malloc's rounding.
///
/// Both come to about 100 bytes; the batcher (`crate::output::batch`) checks the numbers it
/// depends on in a test. Figure 8 of docs/benchmarks.md measures the whole.
pub const LINE_OVERHEAD_BYTES: usize = 128;

/// Most a single line is charged, so that a budget of at least this much can always take one:
/// a piece of [`MAX_LINE_BYTES`] bytes grows at most threefold when decoded (an invalid byte
/// becomes U+FFFD), plus the overhead.
pub const MAX_LINE_CHARGE: usize = 3 * MAX_LINE_BYTES + LINE_OVERHEAD_BYTES;

/// A line's share of the output budget: its text's allocation plus [`LINE_OVERHEAD_BYTES`].
pub fn line_cost(text: &str) -> usize {
    (text.len() + LINE_OVERHEAD_BYTES).min(MAX_LINE_CHARGE)
}

/// Spilled bytes are read back in blocks of this size (a longer line is read whole).
const READ_BLOCK: u64 = 256 * 1024;

/// What the reader and the forwarder share.
struct Shared {
    state: Mutex<State>,
    /// Reader → forwarder: lines were spilled, or the reader is done.
    spilled: Notify,
    /// Forwarder → reader: spilled lines were handed on, or the consumer is gone.
    forwarded: Notify,
}

#[derive(Default)]
struct State {
    /// The spill file, once one was needed.
    file: Option<Arc<File>>,
    /// Bytes of the file handed on; the lines in `read..written` wait in it. Both go back to 0
    /// when the forwarder has caught up and the reader notices.
    read: u64,
    written: u64,
    /// The reader has stopped: nothing more will be spilled.
    reader_done: bool,
    /// The consumer is gone: nothing more can be handed on.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only offsets behind, which stay consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reader's end: hands each line on, or spills it.
pub(super) struct Outlet<T> {
    stream: OutputStream,
    lines: mpsc::UnboundedSender<T>,
    budget: Option<Arc<Semaphore>>,
    /// Set while lines may be spilled (a spec was given and the file has not failed).
    spill: Option<SpillSpec>,
    shared: Arc<Shared>,
    /// The file was emptied in the state but not yet on disk (done before its next write).
    truncate: bool,
}

/// The reader's outlet for one pipe, and the forwarder task of its spilled lines (none if the
/// run spills nothing: no spec, or no budget to exceed).
pub(super) fn outlet<T>(
    stream: OutputStream,
    lines: mpsc::UnboundedSender<T>,
    budget: Option<Arc<Semaphore>>,
    spill: Option<SpillSpec>,
) -> (Outlet<T>, Option<tokio::task::JoinHandle<()>>)
where
    T: From<Line> + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        spilled: Notify::new(),
        forwarded: Notify::new(),
    });
    let spill = spill.filter(|_| budget.is_some());
    let forwarder = spill.as_ref().map(|_| {
        tokio::spawn(forward(
            shared.clone(),
            stream,
            lines.clone(),
            budget.clone(),
        ))
    });
    let outlet = Outlet {
        stream,
        lines,
        budget,
        spill,
        shared,
        truncate: false,
    };
    (outlet, forwarder)
}

impl<T: From<Line>> Outlet<T> {
    /// Hands on the lines of one read, in order. False once the consumer is gone.
    pub(super) async fn offer(&mut self, texts: Vec<String>) -> bool {
        if texts.is_empty() {
            return true;
        }
        match self.spilling() {
            None => return false,
            Some(true) => return self.spill_lines(texts).await,
            Some(false) => {}
        }
        let mut texts = texts.into_iter().map(exact);
        while let Some(text) = texts.next() {
            let permit = match try_take_budget(self.budget.as_ref(), &text) {
                Ok(permit) => permit,
                Err(()) if self.spill.is_some() => {
                    let rest: Vec<String> = std::iter::once(text).chain(texts).collect();
                    return self.spill_lines(rest).await;
                }
                Err(()) => take_budget(self.budget.as_ref(), &text).await,
            };
            if !send(&self.lines, self.stream, text, permit) {
                return false;
            }
        }
        true
    }

    /// Whether lines are waiting in the spill file (so new ones must queue behind them); None if
    /// the consumer is gone. Ends the spill once the forwarder has caught up.
    fn spilling(&mut self) -> Option<bool> {
        let mut state = self.shared.lock();
        if state.closed {
            return None;
        }
        if state.written == 0 {
            return Some(false);
        }
        if state.read < state.written {
            return Some(true);
        }
        state.read = 0;
        state.written = 0;
        self.truncate = true;
        Some(false)
    }

    /// Appends `texts` to the spill file. If it cannot, falls back to the budget (after the
    /// forwarder has handed on what the file holds, to keep the order).
    async fn spill_lines(&mut self, texts: Vec<String>) -> bool {
        let Some(spec) = self.spill.clone() else {
            return self.wait_then_send(texts).await;
        };
        let record = encode(&texts);
        // Wait while the file is full (the pipe waits with us, as without a spill file).
        let (file, offset) = loop {
            let notified = self.shared.forwarded.notified();
            {
                let state = self.shared.lock();
                if state.closed {
                    return false;
                }
                if state.written - state.read + record.len() as u64 <= spec.max_bytes
                    || state.written == state.read
                {
                    break (state.file.clone(), state.written);
                }
            }
            notified.await;
        };
        let truncate = std::mem::take(&mut self.truncate);
        let dir = spec.dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(file) => file,
                None => Arc::new(create_unlinked(&dir)?),
            };
            if truncate {
                file.set_len(0)?;
            }
            file.write_all_at(&record, offset)?;
            Ok::<_, std::io::Error>((file, record.len() as u64))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match written {
            Ok((file, len)) => {
                let mut state = self.shared.lock();
                state.file = Some(file);
                state.written += len;
                drop(state);
                self.shared.spilled.notify_one();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %spec.dir.display(),
                    "spilling a child's output to disk failed; its reader now waits for the database instead");
                self.spill = None;
                self.wait_then_send(texts).await
            }
        }
    }

    /// Waits until the forwarder has handed on every spilled line, then sends `texts`, each
    /// waiting for its share of the budget.
    async fn wait_then_send(&mut self, texts: Vec<String>) -> bool {
        let shared = self.shared.clone();
        loop {
            let notified = shared.forwarded.notified();
            match self.spilling() {
                None => return false,
                Some(false) => break,
                Some(true) => notified.await,
            }
        }
        for text in texts.into_iter().map(exact) {
            let permit = take_budget(self.budget.as_ref(), &text).await;
            if !send(&self.lines, self.stream, text, permit) {
                return false;
            }
        }
        true
    }
}

impl<T> Drop for Outlet<T> {
    /// The reader is done (at the pipe's end, or cut off): the forwarder finishes what is left.
    fn drop(&mut self) {
        self.shared.lock().reader_done = true;
        self.shared.spilled.notify_one();
    }
}

/// The forwarder: hands spilled lines on, in order, each once the budget has room for it.
async fn forward<T: From<Line>>(
    shared: Arc<Shared>,
    stream: OutputStream,
    lines: mpsc::UnboundedSender<T>,
    budget: Option<Arc<Semaphore>>,
) {
    loop {
        let (file, from, to) = loop {
            let notified = shared.spilled.notified();
            {
                let state = shared.lock();
                if state.read < state.written
                    && let Some(file) = &state.file
                {
                    break (file.clone(), state.read, state.written);
                }
                if state.reader_done || state.closed {
                    return;
                }
            }
            notified.await;
        };
        let (texts, consumed) = match tokio::task::spawn_blocking(move || {
            read_records(&file, from, to)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        {
            Ok(read) => read,
            Err(e) => {
                // The file was written moments ago by this process; if it cannot be read back,
                // say so in the output itself rather than lose the lines silently.
                tracing::error!(error = %e, "reading spilled output back failed");
                let lost = to - from;
                (
                    vec![format!(
                        "[otter] {lost} bytes of this run's output were lost: reading them back from the spill file failed: {e}"
                    )],
                    lost,
                )
            }
        };
        for text in texts.into_iter().map(exact) {
            let permit = take_budget(budget.as_ref(), &text).await;
            if !send(&lines, stream, text, permit) {
                shared.lock().closed = true;
                shared.forwarded.notify_one();
                return;
            }
        }
        shared.lock().read = from + consumed;
        shared.forwarded.notify_one();
    }
}

fn send<T: From<Line>>(
    lines: &mpsc::UnboundedSender<T>,
    stream: OutputStream,
    text: String,
    permit: Option<OwnedSemaphorePermit>,
) -> bool {
    lines
        .send(
            Line {
                stream,
                text,
                permit,
            }
            .into(),
        )
        .is_ok()
}

/// `text` holding no more memory than its length (a lossily decoded line may have grown its
/// allocation past it), so that its charge is what it holds.
fn exact(mut text: String) -> String {
    if text.capacity() > text.len() {
        text.shrink_to_fit();
    }
    text
}

/// A line's share of the budget, in permits (see [`line_cost`]).
fn want(text: &str) -> u32 {
    u32::try_from(line_cost(text)).unwrap_or(u32::MAX)
}

/// Waits for `text`'s share of the budget.
async fn take_budget(budget: Option<&Arc<Semaphore>>, text: &str) -> Option<OwnedSemaphorePermit> {
    let budget = budget?;
    budget.clone().acquire_many_owned(want(text)).await.ok()
}

/// Takes `text`'s share of the budget if it is free now.
fn try_take_budget(
    budget: Option<&Arc<Semaphore>>,
    text: &str,
) -> Result<Option<OwnedSemaphorePermit>, ()> {
    let Some(budget) = budget else {
        return Ok(None);
    };
    match budget.clone().try_acquire_many_owned(want(text)) {
        Ok(permit) => Ok(Some(permit)),
        Err(tokio::sync::TryAcquireError::NoPermits) => Err(()),
        // A closed budget hands out nothing, waiting or not.
        Err(tokio::sync::TryAcquireError::Closed) => Ok(None),
    }
}

/// Creates a file in `dir` that no one else can open and that vanishes with its last handle.
fn create_unlinked(dir: &Path) -> std::io::Result<File> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!(
        ".otter-spill-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// Lines as records: a little-endian u32 length, then the UTF-8 bytes.
fn encode(texts: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(texts.iter().map(|t| t.len() + 4).sum());
    for text in texts {
        // Lines are at most a few MiB (MAX_LINE_BYTES, grown by lossy decoding at most 3×).
        out.extend_from_slice(&(text.len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

/// The whole records in `bytes`, and how many bytes they took.
fn decode(bytes: &[u8]) -> (Vec<String>, u64) {
    let mut texts = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        texts.push(String::from_utf8_lossy(body).into_owned());
        at += 4 + len;
    }
    (texts, at as u64)
}

/// Reads the records of `from..to` (a block of them, at least one).
fn read_records(file: &File, from: u64, to: u64) -> std::io::Result<(Vec<String>, u64)> {
    let mut len = (to - from).min(READ_BLOCK);
    loop {
        let mut buf = vec![0; len as usize];
        file.read_exact_at(&mut buf, from)?;
        let (texts, used) = decode(&buf);
        if used > 0 {
            return Ok((texts, used));
        }
        // One record longer than the block: read it whole.
        let need = buf
            .get(..4)
            .map(|h| 4 + u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]])))
            .unwrap_or(u64::MAX);
        if need <= len || need > to - from {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a spilled record at offset {from} runs past the spilled bytes"),
            ));
        }
        len = need;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_cut_record_waits() {
        let texts = vec!["a".to_owned(), String::new(), "é ✓".to_owned()];
        let bytes = encode(&texts);
        assert_eq!(decode(&bytes), (texts.clone(), bytes.len() as u64));
        let (head, used) = decode(&bytes[..bytes.len() - 1]);
        assert_eq!(head, texts[..2]);
        assert_eq!(used, 9);
    }

    #[test]
    fn a_record_longer_than_a_block_is_read_whole() {
        let dir = std::env::temp_dir();
        let file = create_unlinked(&dir).unwrap();
        let long = "x".repeat(READ_BLOCK as usize * 2);
        let bytes = encode(&[long.clone(), "after".to_owned()]);
        file.write_all_at(&bytes, 0).unwrap();
        let (texts, used) = read_records(&file, 0, bytes.len() as u64).unwrap();
        assert_eq!(texts, [long]);
        let (rest, _) = read_records(&file, used, bytes.len() as u64).unwrap();
        assert_eq!(rest, ["after"]);
    }
}
