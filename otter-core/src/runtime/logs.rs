//! A container's log: the last lines of its stdout and stderr.

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use futures::StreamExt;

use super::{LogLine, Runtime, RuntimeError, is_status};
use crate::model::{OutputStream, WorkspaceId};
use crate::output::{LineSplitter, MAX_LINE_BYTES};

impl Runtime {
    /// The last `tail` lines of the container's log (at most `OTTER_RUNTIME_MAX_LOG_LINES`),
    /// with the number of lines asked for after the cap.
    pub async fn logs(
        &self,
        id: WorkspaceId,
        tail: usize,
    ) -> Result<(Vec<LogLine>, usize), RuntimeError> {
        let tail = tail.clamp(1, self.settings.max_log_lines);
        let docker = self.docker().await?;
        if self.inspect(docker, id).await?.is_none() {
            return Err(RuntimeError::NoContainer(id));
        }
        let mut stream = docker.logs(
            &self.container_name(id),
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: tail.to_string(),
                ..Default::default()
            }),
        );
        let mut out = LogCollector::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(output) => out.push(output),
                Err(e) if is_status(&e, 404) => return Err(RuntimeError::NoContainer(id)),
                Err(e) => return Err(self.classify(e)),
            }
        }
        let mut lines = out.finish();
        if lines.len() > tail {
            lines.drain(..lines.len() - tail);
        }
        Ok((lines, tail))
    }
}

/// Cuts a container's log frames into lines per stream (a long line may span frames).
struct LogCollector {
    lines: Vec<LogLine>,
    stdout: LineSplitter,
    stderr: LineSplitter,
}

impl LogCollector {
    fn new() -> Self {
        Self {
            lines: Vec::new(),
            stdout: LineSplitter::new(MAX_LINE_BYTES),
            stderr: LineSplitter::new(MAX_LINE_BYTES),
        }
    }

    fn push(&mut self, output: LogOutput) {
        let (stream, splitter, bytes) = match output {
            LogOutput::StdErr { message } => (OutputStream::Stderr, &mut self.stderr, message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (OutputStream::Stdout, &mut self.stdout, message)
            }
            LogOutput::StdIn { .. } => return,
        };
        let lines = splitter.push(&bytes);
        self.lines
            .extend(lines.into_iter().map(|text| LogLine { stream, text }));
    }

    fn finish(mut self) -> Vec<LogLine> {
        for (stream, splitter) in [
            (OutputStream::Stdout, &mut self.stdout),
            (OutputStream::Stderr, &mut self.stderr),
        ] {
            if let Some(text) = splitter.finish() {
                self.lines.push(LogLine { stream, text });
            }
        }
        self.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_split_per_stream() {
        let mut c = LogCollector::new();
        c.push(LogOutput::StdOut {
            message: "a\nb".into(),
        });
        c.push(LogOutput::StdErr {
            message: "e1\n".into(),
        });
        c.push(LogOutput::StdOut {
            message: "c\r\n".into(),
        });
        c.push(LogOutput::StdErr {
            message: "tail".into(),
        });
        let lines: Vec<(OutputStream, String)> =
            c.finish().into_iter().map(|l| (l.stream, l.text)).collect();
        assert_eq!(
            lines,
            vec![
                (OutputStream::Stdout, "a".to_owned()),
                (OutputStream::Stderr, "e1".to_owned()),
                (OutputStream::Stdout, "bc".to_owned()),
                (OutputStream::Stderr, "tail".to_owned()),
            ]
        );
    }
}
