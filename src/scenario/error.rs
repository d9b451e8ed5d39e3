//! Scenario errors, located: `file:line:column: key: message`, with the valid choices.
//!
//! Byte offsets come from toml spans; the dotted key is recovered from the source text (the
//! enclosing `[table]` header plus the key on that line) for parse errors that carry no key.

use std::path::{Path, PathBuf};

/// A scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value is invalid.
    #[error("{}:{line}:{column}: {key}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted key, e.g. `load.rate` or `devices[2].expect.status`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A command-line flag's value is invalid (the same checks as the key it overrides).
    #[error("{flag}: {message} (it overrides {key})")]
    Flag {
        /// The flag, e.g. `--connections`.
        flag: &'static str,
        /// The key it overrides.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// Source text plus its path, for locating errors.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at a byte offset with a known key.
    pub(crate) fn error(
        &self,
        offset: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        let message = clip(message.into());
        if let Some(flag) = super::flags::flag_of(offset) {
            return ScenarioError::Flag {
                flag,
                key: key.into(),
                message,
            };
        }
        let (line, column) = line_col(self.text, offset);
        ScenarioError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: key.into(),
            message,
        }
    }

    /// An error at a byte offset whose key is read off the source.
    pub(crate) fn error_here(&self, offset: usize, message: impl Into<String>) -> ScenarioError {
        self.error(offset, key_at(self.text, offset), message)
    }
}

/// A message quotes at most this much of any one word (a value from the file), and is at most
/// `MAX_MESSAGE` characters in all: a 50 MB line is never echoed whole.
const MAX_WORD: usize = 120;
const MAX_MESSAGE: usize = 600;

fn clip(m: String) -> String {
    if m.len() <= MAX_WORD && !m.contains('\n') {
        return m;
    }
    let mut out = String::new();
    for (i, w) in m.split_whitespace().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if w.chars().count() > MAX_WORD {
            out.extend(w.chars().take(MAX_WORD));
            out.push('…');
        } else {
            out.push_str(w);
        }
        if out.chars().count() > MAX_MESSAGE {
            out = out.chars().take(MAX_MESSAGE).collect();
            out.push('…');
            break;
        }
    }
    out
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key at a byte offset: the last `[table]`/`[[array]]` header above it, then the keys
/// on its own line up to the offset (`outer = { inner = …`).
pub(crate) fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut header = String::new();
    for l in text[..line_start].lines() {
        let t = l.trim();
        if let Some(h) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            header = h.trim().to_owned();
        } else if let Some(h) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            header = h.trim().to_owned();
        }
    }
    let line = &text[line_start..line_end];
    let upto = &text[line_start..offset];
    let mut keys: Vec<String> = Vec::new();
    // Keys assigned before the offset on this line (outermost first).
    for part in upto
        .split('=')
        .rev()
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let k = part
            .rsplit(['{', ','])
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if !k.is_empty() {
            keys.push(k.to_owned());
        }
    }
    if keys.is_empty() {
        // The offset is on a key itself (e.g. an unknown field): take the text up to `=`.
        let rest = &text[offset..line_end];
        let k = rest
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        let whole = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        keys.push(if k.is_empty() {
            whole.to_owned()
        } else {
            k.to_owned()
        });
    }
    let tail = keys.join(".");
    match (header.is_empty(), tail.is_empty()) {
        (true, _) => tail,
        (false, true) => header,
        (false, false) => format!("{header}.{tail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locating() {
        let t =
            "name = \"x\"\n[load]\nrate = \"fast\"\n[[devices]]\nexpect = { status = \"gone\" }\n";
        assert_eq!(line_col(t, 0), (1, 1));
        let o = t.find("\"fast\"").unwrap();
        assert_eq!(line_col(t, o), (3, 8));
        assert_eq!(key_at(t, o), "load.rate");
        let o = t.find("\"gone\"").unwrap();
        assert_eq!(key_at(t, o), "devices.expect.status");
        let o = t.find("rate").unwrap();
        assert_eq!(key_at(t, o), "load.rate");
    }
}
