//! Ordered JSON: serde_json's `Map` sorts keys, and the real CLI's key order must be kept.

use std::fmt::Write as _;

/// A JSON value whose objects keep their keys in insertion order.
pub(crate) enum J {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
    /// Already rendered pretty JSON at the nesting depth it is spliced in (the export's
    /// `config` object).
    Raw(String),
}

macro_rules! obj {
    ($($k:literal => $v:expr),* $(,)?) => {
        $crate::json::J::Obj(vec![$(($k, $crate::json::J::from($v))),*])
    };
}
pub(crate) use obj;

impl From<&str> for J {
    fn from(v: &str) -> Self {
        J::Str(v.to_owned())
    }
}

impl From<String> for J {
    fn from(v: String) -> Self {
        J::Str(v)
    }
}

impl From<&String> for J {
    fn from(v: &String) -> Self {
        J::Str(v.clone())
    }
}

impl From<bool> for J {
    fn from(v: bool) -> Self {
        J::Bool(v)
    }
}

impl From<i64> for J {
    fn from(v: i64) -> Self {
        J::Int(v)
    }
}

impl From<u64> for J {
    fn from(v: u64) -> Self {
        J::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for J {
    fn from(v: f64) -> Self {
        J::Float(v)
    }
}

impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> Self {
        J::Arr(v)
    }
}

impl<T: Into<J>> From<Option<T>> for J {
    fn from(v: Option<T>) -> Self {
        v.map_or(J::Null, Into::into)
    }
}

pub(crate) fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

fn push_indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

impl J {
    pub(crate) fn compact(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            J::Float(f) => match serde_json::to_string(f) {
                // serde_json writes 0.0 as "0.0" and 5.0 as "5.0", like the real CLI.
                Ok(text) if f.is_finite() => out.push_str(&text),
                _ => out.push_str("null"),
            },
            J::Str(s) => push_json_str(out, s),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.compact(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_json_str(out, key);
                    out.push(':');
                    value.compact(out);
                }
                out.push('}');
            }
            J::Raw(text) => out.push_str(text),
        }
    }

    /// Pretty form with 2-space indent, like serde_json's (and Python's `indent=2`):
    /// empty containers stay `[]` / `{}`.
    pub(crate) fn pretty(&self, out: &mut String, depth: usize) {
        match self {
            J::Arr(items) if !items.is_empty() => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    push_indent(out, depth + 1);
                    item.pretty(out, depth + 1);
                }
                out.push('\n');
                push_indent(out, depth);
                out.push(']');
            }
            J::Obj(fields) if !fields.is_empty() => {
                out.push_str("{\n");
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    push_indent(out, depth + 1);
                    push_json_str(out, key);
                    out.push_str(": ");
                    value.pretty(out, depth + 1);
                }
                out.push('\n');
                push_indent(out, depth);
                out.push('}');
            }
            other => other.compact(out),
        }
    }

    pub(crate) fn to_compact(&self) -> String {
        let mut out = String::new();
        self.compact(&mut out);
        out
    }

    pub(crate) fn to_pretty(&self) -> String {
        let mut out = String::new();
        self.pretty(&mut out, 0);
        out
    }
}
