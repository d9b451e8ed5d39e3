//! The layer order of `src/lib.rs`'s `# Layout` is true: every `crate::` path in `src/` goes to a
//! module on a lower line. A violation names the importing file and line and both modules.

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, top first: each line's module names.
fn layers(lib: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_layout = false;
    for line in lib.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break;
        };
        let doc = doc.trim();
        if doc == "# Layout" {
            in_layout = true;
            continue;
        }
        if !in_layout {
            continue;
        }
        // `N. `a`, `b`: what they are`
        let Some((num, rest)) = doc.split_once(". ") else {
            continue;
        };
        if num.parse::<u32>().is_err() {
            continue;
        }
        let head = rest.split_once(':').map_or(rest, |(h, _)| h);
        let names: Vec<String> = head
            .split(',')
            .map(|n| n.trim().trim_matches('`').to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        out.push(names);
    }
    out
}

/// `(file, line, from, to)` for every import that is not downward.
fn violations(
    layers: &[Vec<String>],
    files: &[(String, String)],
) -> Vec<(String, usize, String, String)> {
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let mut bad = Vec::new();
    for (file, text) in files {
        let from = file.split('/').next().unwrap().trim_end_matches(".rs");
        let Some(&r_from) = rank.get(from) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let code = code.split(" // ").next().unwrap();
            for (at, _) in code.match_indices("crate::") {
                let to: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if to == from {
                    continue;
                }
                match rank.get(to.as_str()) {
                    Some(&r_to) if r_to > r_from => {}
                    _ => bad.push((file.clone(), n + 1, from.to_owned(), to)),
                }
            }
        }
    }
    bad
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, base, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn imports_only_go_down_the_layers_of_lib_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = layers(&lib);
    // The layout is current: it lists every top-level module exactly once.
    let mut listed: Vec<&str> = layers.iter().flatten().map(String::as_str).collect();
    listed.sort_unstable();
    let mut declared: Vec<&str> = lib
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub(crate) mod "))
        })
        .map(|l| l.trim_end_matches(';'))
        .collect();
    declared.sort_unstable();
    assert_eq!(listed, declared, "lib.rs # Layout lists each module once");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    files.retain(|(f, _)| f != "lib.rs" && f != "main.rs");
    let bad = violations(&layers, &files);
    assert!(
        bad.is_empty(),
        "imports that go up or sideways:\n{}",
        bad.iter()
            .map(|(f, n, a, b)| format!("  src/{f}:{n}: {a} imports {b}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The check can fail: a deliberate upward `use` is found and named.
#[test]
fn an_upward_import_is_named() {
    let layers = vec![
        vec!["run".to_owned()],
        vec!["driver".to_owned(), "emulator".to_owned()],
        vec!["dps".to_owned()],
    ];
    let files = vec![
        ("run.rs".to_owned(), "use crate::driver::Stop;\n".to_owned()),
        (
            "dps/wire.rs".to_owned(),
            "// crate::run in a comment is fine\nuse crate::run::Overrides;\n".to_owned(),
        ),
        (
            "driver/mod.rs".to_owned(),
            "fn f() { crate::emulator::start() }\n".to_owned(),
        ),
    ];
    let bad = violations(&layers, &files);
    assert_eq!(
        bad,
        vec![
            (
                "dps/wire.rs".to_owned(),
                2,
                "dps".to_owned(),
                "run".to_owned()
            ),
            (
                "driver/mod.rs".to_owned(),
                1,
                "driver".to_owned(),
                "emulator".to_owned()
            ),
        ]
    );
}
