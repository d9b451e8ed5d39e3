//! Snapshot files: the committed transcript in insta's `.snap` format (a YAML header between
//! `---` lines, then the body), so `cargo insta review` and `cargo insta accept` work on them.
//!
//! insta's runtime API asserts inside tests and panics on mismatch, which does not fit a CLI, so
//! the (small) format is written here; a test reads our files back with `insta::Snapshot`.
//! Also here: comparison, the `.snap.new` protocol (insta's: a pending snapshot beside the
//! accepted one), and the reviewer-facing diff with each hunk labelled by its class.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use similar::{ChangeTag, TextDiff};

/// Value of the header's `source` field.
const SOURCE: &str = "loadtest check";
/// Lines of context around each change.
const CONTEXT: usize = 3;

/// The result of comparing a transcript with its snapshot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Comparison {
    /// Identical.
    Match,
    /// No snapshot yet; the transcript was written to `.snap.new`.
    Missing,
    /// Different; the transcript was written to `.snap.new`.
    Drift {
        /// Classes and sections that changed, one per line.
        summary: String,
        /// Unified diff, snapshot → new, hunks labelled with their class.
        diff: String,
    },
    /// `--update-snapshots`: the snapshot was (re)written.
    Updated {
        /// There was no snapshot before.
        created: bool,
    },
}

impl Comparison {
    /// `match`, `missing`, `drift` or `updated`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Comparison::Match => "match",
            Comparison::Missing => "missing",
            Comparison::Drift { .. } => "drift",
            Comparison::Updated { .. } => "updated",
        }
    }
}

/// The `.snap.new` path beside a snapshot.
pub(crate) fn pending_path(snap: &Path) -> PathBuf {
    let mut p = snap.as_os_str().to_owned();
    p.push(".new");
    PathBuf::from(p)
}

/// A whole `.snap` file.
pub(crate) fn render_file(expression: &str, transcript: &str) -> String {
    format!(
        "---\nsource: {SOURCE}\nexpression: {}\n---\n{}\n",
        serde_json::Value::String(expression.to_owned()),
        transcript.trim_end()
    )
}

/// The body of a `.snap` file (after the header), normalised as insta does (CRLF → LF, trailing
/// whitespace trimmed). A file without a header is taken whole.
pub(crate) fn body_of(file: &str) -> String {
    let file = file.replace("\r\n", "\n");
    let body = match file.strip_prefix("---\n") {
        Some(rest) => match rest.find("\n---\n") {
            Some(i) => &rest[i + 5..],
            None => rest,
        },
        None => &file,
    };
    body.trim_end().to_owned()
}

/// Compares `transcript` with the snapshot at `snap`, writing `.snap.new` or (with `update`) the
/// snapshot itself. A stale `.snap.new` is removed when the transcript matches.
pub(crate) fn compare(
    snap: &Path,
    expression: &str,
    transcript: &str,
    update: bool,
) -> io::Result<Comparison> {
    let pending = pending_path(snap);
    let old = match std::fs::read_to_string(snap) {
        Ok(s) => Some(body_of(&s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let new = transcript.trim_end();
    let remove_pending = || match std::fs::remove_file(&pending) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    };
    if old.as_deref() == Some(new) {
        remove_pending()?;
        return Ok(Comparison::Match);
    }
    let file = render_file(expression, new);
    if let Some(dir) = snap.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    if update {
        std::fs::write(snap, file)?;
        remove_pending()?;
        return Ok(Comparison::Updated {
            created: old.is_none(),
        });
    }
    std::fs::write(&pending, file)?;
    Ok(match old {
        None => Comparison::Missing,
        Some(old) => Comparison::Drift {
            summary: drift_summary(&old, new),
            diff: diff(&old, new),
        },
    })
}

/// A unified diff whose hunk headers name the class they fall in:
/// `@@ -12,7 +12,7 @@ class toaster`.
pub(crate) fn diff(old: &str, new: &str) -> String {
    let d = TextDiff::from_lines(old, new);
    let old_lines: Vec<&str> = old.lines().collect();
    let mut out = String::from("--- snapshot\n+++ this run\n");
    for group in d.grouped_ops(CONTEXT) {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let (o0, o1) = (first.old_range().start, last.old_range().end);
        let (n0, n1) = (first.new_range().start, last.new_range().end);
        // Label the hunk with the class of its first changed line, not of its context.
        let changed_at = group
            .iter()
            .find(|op| !matches!(op, similar::DiffOp::Equal { .. }))
            .map_or(o0, |op| op.old_range().start);
        let class = old_lines[..(changed_at + 1).min(old_lines.len())]
            .iter()
            .rev()
            .find_map(|l| class_of(l))
            .unwrap_or("(header)");
        let _ = writeln!(
            out,
            "@@ -{},{} +{},{} @@ class {class}",
            o0 + 1,
            o1 - o0,
            n0 + 1,
            n1 - n0
        );
        for op in &group {
            for c in d.iter_changes(op) {
                let sign = match c.tag() {
                    ChangeTag::Equal => ' ',
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                };
                let _ = writeln!(out, "{sign}{}", c.value().trim_end_matches('\n'));
            }
        }
    }
    out
}

fn class_of(line: &str) -> Option<&str> {
    line.strip_prefix("=== class ")?.strip_suffix(" ===")
}

/// Splits a transcript into (class, section title, lines) blocks.
fn blocks(t: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    let mut class = "(header)".to_owned();
    for line in t.lines() {
        if let Some(c) = class_of(line) {
            class = c.to_owned();
            continue;
        }
        let title = if line.starts_with(' ') || line.is_empty() {
            None
        } else {
            Some(line.split(':').next().unwrap_or(line).to_owned())
        };
        match (title, out.last_mut()) {
            (None, Some(last)) if last.0 == class => {
                last.2.push_str(line);
                last.2.push('\n');
            }
            (title, _) => out.push((
                class.clone(),
                title.unwrap_or_default(),
                format!("{line}\n"),
            )),
        }
    }
    out
}

/// One line per changed class: `class toaster: outcomes, initial twins, example`.
pub(crate) fn drift_summary(old: &str, new: &str) -> String {
    let (a, b) = (blocks(old), blocks(new));
    let mut classes: Vec<String> = Vec::new();
    for (c, ..) in a.iter().chain(&b) {
        if !classes.contains(c) {
            classes.push(c.clone());
        }
    }
    let mut out = String::new();
    for c in classes {
        let of = |v: &[(String, String, String)]| -> Vec<(String, String)> {
            v.iter()
                .filter(|x| x.0 == c)
                .map(|x| (x.1.clone(), x.2.clone()))
                .collect()
        };
        let (x, y) = (of(&a), of(&b));
        if x == y {
            continue;
        }
        let label = if c == "(header)" {
            "header".to_owned()
        } else {
            format!("class {c}")
        };
        if x.is_empty() || y.is_empty() {
            let what = if x.is_empty() { "new" } else { "gone" };
            let _ = writeln!(out, "{label}: {what}");
            continue;
        }
        let mut changed: Vec<&str> = Vec::new();
        for (title, body) in x.iter().chain(&y) {
            let same = x.iter().any(|e| &e.0 == title && &e.1 == body)
                && y.iter().any(|e| &e.0 == title && &e.1 == body);
            if !same && !changed.contains(&title.as_str()) {
                changed.push(title);
            }
        }
        let _ = writeln!(out, "{label}: {}", changed.join(", "));
    }
    out
}

/// ANSI colours for a terminal: removals red, additions green, hunk headers cyan.
pub(crate) fn colourise(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + 64);
    for line in diff.lines() {
        let code = if line.starts_with("@@") {
            Some("36")
        } else if line.starts_with('-') {
            Some("31")
        } else if line.starts_with('+') {
            Some("32")
        } else {
            None
        };
        match code {
            Some(c) => {
                let _ = writeln!(out, "\x1b[{c}m{line}\x1b[0m");
            }
            None => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "scenario: s\n\n=== class a ===\noutcomes:\n     2  assigned  hub=h1\ninitial twins:\n     2  {\"x\":1}\n\n=== class b ===\noutcomes:\n     2  assigned  hub=h2\n";

    #[test]
    fn diff_names_class_and_summary_names_sections() {
        let new = OLD
            .replace("hub=h1", "hub=h9")
            .replace("{\"x\":1}", "{\"x\":2}");
        let d = diff(OLD, &new);
        assert!(d.contains("@@ -1,") || d.contains("class a"), "{d}");
        assert!(d.contains("class a"), "{d}");
        assert!(d.contains("-     2  assigned  hub=h1"), "{d}");
        assert!(d.contains("+     2  assigned  hub=h9"), "{d}");
        assert_eq!(
            drift_summary(OLD, &new),
            "class a: outcomes, initial twins\n"
        );
        let gone = OLD.split("\n=== class b").next().unwrap().to_owned() + "\n";
        assert_eq!(drift_summary(OLD, &gone), "class b: gone\n");
    }

    #[test]
    fn colours_only_changes_and_hunk_headers() {
        let c = colourise("--- snapshot\n@@ -1 +1 @@ class a\n x\n-y\n+z\n");
        assert!(c.contains("\x1b[36m@@ -1 +1 @@ class a\x1b[0m"));
        assert!(c.contains("\x1b[31m-y\x1b[0m") && c.contains("\x1b[32m+z\x1b[0m"));
        assert!(c.contains("\n x\n"));
    }

    #[test]
    fn file_round_trip_and_pending_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("s.snap");
        assert_eq!(
            compare(&snap, "s.toml", OLD, false).unwrap(),
            Comparison::Missing
        );
        assert!(pending_path(&snap).exists() && !snap.exists());
        assert_eq!(
            compare(&snap, "s.toml", OLD, true).unwrap(),
            Comparison::Updated { created: true }
        );
        assert!(!pending_path(&snap).exists());
        assert_eq!(
            body_of(&std::fs::read_to_string(&snap).unwrap()),
            OLD.trim_end()
        );
        assert_eq!(
            compare(&snap, "s.toml", OLD, false).unwrap(),
            Comparison::Match
        );
        let drift = compare(&snap, "s.toml", &OLD.replace("h2", "h3"), false).unwrap();
        assert!(matches!(drift, Comparison::Drift { .. }));
        assert!(pending_path(&snap).exists());
        // Matching again removes the stale pending file.
        compare(&snap, "s.toml", OLD, false).unwrap();
        assert!(!pending_path(&snap).exists());
    }
}
