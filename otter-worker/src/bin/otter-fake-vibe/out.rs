//! stdout in whole lines, stderr lines, and the clock the entries carry.

use std::env;
use std::fs;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

const FLUSH_EVERY: usize = 64;

/// stdout, written in whole lines. Each line is flushed at once, except in batch mode
/// (`flood`) where lines go out `FLUSH_EVERY` at a time. A closed stdout is not an error:
/// output is dropped from then on.
pub(crate) struct Out {
    buf: Vec<u8>,
    pending: usize,
    pub(crate) batch: bool,
    broken: bool,
    /// `FAKE_VIBE_STALL_FILE` and the longest write seen so far.
    stall_file: Option<PathBuf>,
    max_write: Duration,
}

impl Out {
    pub(crate) fn new() -> Self {
        Out {
            buf: Vec::new(),
            pending: 0,
            batch: false,
            broken: false,
            stall_file: env::var_os("FAKE_VIBE_STALL_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            max_write: Duration::ZERO,
        }
    }

    pub(crate) fn line(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.buf.push(b'\n');
        self.pending += 1;
        if !self.batch || self.pending >= FLUSH_EVERY {
            self.flush();
        }
    }

    pub(crate) fn text(&mut self, text: &str) {
        self.buf.extend_from_slice(text.as_bytes());
        self.flush();
    }

    pub(crate) fn flush(&mut self) {
        if !self.broken && !self.buf.is_empty() {
            let began = Instant::now();
            let mut stdout = io::stdout().lock();
            if stdout
                .write_all(&self.buf)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                self.broken = true;
            }
            drop(stdout);
            let took = began.elapsed();
            if took > self.max_write
                && let Some(path) = &self.stall_file
            {
                self.max_write = took;
                let _ = fs::write(path, took.as_micros().to_string());
            }
        }
        self.buf.clear();
        self.pending = 0;
    }
}

/// One line on stderr; a closed stderr is ignored (no panic as with `eprintln!`).
pub(crate) fn err_line(line: &str) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
    let _ = stderr.flush();
}

pub(crate) fn err_raw(text: &str) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn rfc3339_micros(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}
