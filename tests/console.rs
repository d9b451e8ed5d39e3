//! The live console of `loadtest run`: under a pseudo-terminal (util-linux `script`, which gives
//! the child a pty and copies what it draws) the multi-line view with elapsed/planned time, the
//! last second's rate and percentiles, in flight, outcomes and errors; on a pipe, one plain line
//! every 10 s; nothing with `--no-progress` or `-q`.

use std::process::{Command, Stdio};

use crate::util::{bin, scenario, tempdir};

/// Strips ANSI escape sequences (CSI) and carriage returns from what a terminal was sent.
fn plain(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for d in chars.by_ref() {
                        if d.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

#[test]
fn a_terminal_gets_the_multi_line_view_and_a_pipe_a_line_every_ten_seconds() {
    let dir = tempdir();
    let exe = bin().get_program().to_owned();
    let contoso = scenario("contoso.toml");
    let args = |out: &str| {
        vec![
            "run".to_owned(),
            contoso.to_str().unwrap().to_owned(),
            "--rate".into(),
            "50".into(),
            "--duration".into(),
            "11s".into(),
            "--thresholds".into(),
            "counts".into(),
            "--out".into(),
            dir.path().join(out).to_str().unwrap().to_owned(),
        ]
    };
    // The pipe case runs beside the terminal case.
    let piped = bin()
        .args(args("piped"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = vec![exe.to_str().unwrap().to_owned()];
    line.extend(args("tty"));
    let command = line
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let tty = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("COLUMNS", "120")
        .env("LINES", "40")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script runs");
    let shown = String::from_utf8_lossy(&tty.stdout).into_owned();
    assert_eq!(tty.status.code(), Some(0), "{shown}");
    // Redrawn in place: the cursor moves up over the view's lines.
    assert!(shown.contains("\u{1b}[3A"), "no redraw: {shown}");
    let text = plain(&shown);
    let frame = |needle: &str| text.lines().any(|l| l.contains(needle));
    assert!(frame("loadtest run: scenario contoso (webhook mode) against embedded reference webhook (tutorial-current), 50/s for 11s"), "{text}");
    assert!(frame("/ 00:00:11 ["), "elapsed / planned: {text}");
    assert!(frame("ended"), "{text}");
    // The last completed second's rate (about 50/s; which second ends up in a frame is timing).
    let rate_shown = |l: &str| {
        l.split("last 1 s ").nth(1).is_some_and(|r| {
            r.split("/s")
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
                && r.contains("p99 ")
        })
    };
    assert!(
        text.lines().any(rate_shown),
        "the last second's rate: {text}"
    );
    assert!(frame("in flight "), "{text}");
    assert!(frame("outcomes  assigned "), "{text}");
    assert!(frame("errors    none  timed out 0  429s 0"), "{text}");
    assert!(frame("verdict: PASS"), "{text}");
    // The pipe: a line after 10 s, none before, none with the summary's numbers wrong.
    let piped = piped.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(piped.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("progress ")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    let l = lines[0];
    assert!(l.starts_with("progress 00:00:1"), "{l}");
    assert!(l.contains("/00:00:11: ") && l.contains("/550 ended"), "{l}");
    assert!(rate_shown(l) && l.contains("outcomes assigned "), "{l}");
    assert!(!err.contains('\u{1b}'), "no escapes on a pipe: {err}");
    // Quiet: nothing but warnings and errors.
    let quiet = bin()
        .args(args("quiet"))
        .args(["--duration", "1s", "--no-progress"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&quiet.stderr);
    assert!(!err.contains("progress "), "{err}");
}
