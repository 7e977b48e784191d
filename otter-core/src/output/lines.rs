//! Output cut into lines: one splitter for every byte stream Otter reads line by line (a
//! child's pipes, the engine's build stream, a container's log).

/// Longest line kept whole; longer ones are cut into pieces of this size.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Splits a byte stream into lines: `\n`-terminated, a trailing `\r` removed, invalid UTF-8
/// decoded lossily (per complete line, never per chunk), lines longer than `max_line` bytes cut
/// into pieces of at most `max_line` bytes (cut on a char boundary where possible), and a final
/// unterminated line returned at EOF.
///
/// Memory stays bounded: an over-long line is cut as soon as more than `max_line` bytes of it
/// are buffered, and the output does not depend on how the input is chunked. When a cut line
/// ends exactly at a cut, no empty piece follows it.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    pending: Vec<u8>,
    /// Pieces of the current line were already returned.
    continued: bool,
}

impl LineSplitter {
    /// A splitter cutting lines longer than `max_line` bytes (at least 1).
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line: max_line.max(1),
            pending: Vec::new(),
            continued: false,
        }
    }

    /// Feed bytes; returns the lines (and pieces of over-long lines) they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.pending.extend_from_slice(&rest[..newline]);
                    rest = &rest[newline + 1..];
                    self.end_line(&mut out);
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    rest = &[];
                    self.cut_overlong(&mut out);
                }
            }
        }
        out
    }

    /// End of input: the final line if it had no `\n`.
    pub fn finish(&mut self) -> Option<String> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            self.end_line(&mut out);
        }
        self.continued = false;
        // `pending` never holds more than `max_line` bytes between calls, so `end_line` gives at
        // most one piece; join defensively all the same.
        match out.len() {
            0 => None,
            1 => out.pop(),
            _ => Some(out.concat()),
        }
    }

    /// While more than `max_line` bytes are buffered, return pieces.
    fn cut_overlong(&mut self, out: &mut Vec<String>) {
        while self.pending.len() > self.max_line {
            let cut = cut_point(&self.pending, self.max_line);
            let piece: Vec<u8> = self.pending.drain(..cut).collect();
            out.push(String::from_utf8_lossy(&piece).into_owned());
            self.continued = true;
        }
    }

    /// The buffered bytes are a complete line (without its `\n`).
    fn end_line(&mut self, out: &mut Vec<String>) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        self.cut_overlong(out);
        if !(self.pending.is_empty() && self.continued) {
            out.push(String::from_utf8_lossy(&self.pending).into_owned());
        }
        self.pending.clear();
        self.continued = false;
    }
}

/// Where to cut `bytes` (longer than `max`) to get a piece of at most `max` bytes: before the
/// UTF-8 character straddling `max`, or at `max` when there is none (or the piece would be
/// empty).
fn cut_point(bytes: &[u8], max: usize) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let mut cut = max;
    // A UTF-8 character has at most 3 continuation bytes.
    while cut > 0 && max - cut < 3 && bytes.get(cut).copied().is_some_and(is_continuation) {
        cut -= 1;
    }
    let lead_ok = bytes.get(cut).is_some_and(|&b| !is_continuation(b));
    if cut == 0 || !lead_ok { max } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(max);
        let mut lines: Vec<String> = chunks.iter().flat_map(|c| splitter.push(c)).collect();
        lines.extend(splitter.finish());
        lines
    }

    /// The input fed whole, in two pieces at every position, and byte by byte.
    fn split_every_way(max: usize, input: &[u8]) -> Vec<String> {
        let whole = split_all(max, &[input]);
        for at in 0..=input.len() {
            assert_eq!(
                split_all(max, &[&input[..at], &input[at..]]),
                whole,
                "split at {at}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(split_all(max, &bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn splitter_basics() {
        assert_eq!(
            split_every_way(100, b"a\nbc\r\n\n\r\nd"),
            ["a", "bc", "", "", "d"]
        );
        assert_eq!(split_every_way(100, b""), Vec::<String>::new());
        assert_eq!(split_every_way(100, b"\n"), [""]);
        assert_eq!(split_every_way(100, b"x\r"), ["x"]);
        assert_eq!(split_every_way(100, b"a\rb\n"), ["a\rb"]);
        assert_eq!(
            split_every_way(100, "h\u{e9}llo \u{20ac}\n".as_bytes()),
            ["h\u{e9}llo \u{20ac}"]
        );
        assert_eq!(split_every_way(100, b"a\xffb\n"), ["a\u{fffd}b"]);
    }

    #[test]
    fn splitter_cuts_long_lines() {
        assert_eq!(
            split_every_way(4, b"abcdefghij\nk\n"),
            ["abcd", "efgh", "ij", "k"]
        );
        // Exactly max bytes, or a multiple of it: no empty piece after the last cut.
        assert_eq!(
            split_every_way(4, b"abcd\r\nabcdefgh\nx"),
            ["abcd", "abcd", "efgh", "x"]
        );
        assert_eq!(split_every_way(4, b"abcdefgh"), ["abcd", "efgh"]);
        // A cut never splits a char when it can avoid it: "€" is 3 bytes.
        assert_eq!(
            split_every_way(4, "abc\u{20ac}de\n".as_bytes()),
            ["abc", "\u{20ac}d", "e"]
        );
        assert_eq!(
            split_every_way(4, "\u{1f9a6}\u{1f9a6}".as_bytes()),
            ["\u{1f9a6}", "\u{1f9a6}"]
        );
        // Impossible to keep whole (4-byte char, max 2): cut at max, decoded lossily.
        let pieces = split_every_way(2, "\u{1f9a6}\n".as_bytes());
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.contains('\u{fffd}')));
        // max 0 behaves as 1.
        assert_eq!(split_every_way(0, b"ab\n"), ["a", "b"]);
    }

    #[test]
    fn cut_points() {
        assert_eq!(cut_point(b"abcdef", 4), 4);
        assert_eq!(cut_point("abc\u{20ac}".as_bytes(), 4), 3);
        assert_eq!(cut_point("\u{1f9a6}x".as_bytes(), 2), 2);
        assert_eq!(cut_point(b"\x80\x80\x80\x80\x80\x80", 4), 4);
    }
}
