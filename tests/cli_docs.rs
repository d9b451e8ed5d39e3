//! Shell completions and the man page come from the CLI definition itself.

use crate::util::run;

#[test]
fn completions_and_man_page_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let r = run(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        for cmd in ["run", "check", "plan", "report", "dps", "webhook", "keys"] {
            assert!(r.stdout.contains(cmd), "{shell} completions lack {cmd}");
        }
        assert!(
            r.stdout.contains("--start-at"),
            "{shell}: flags are completed too"
        );
    }
    let r = run(&["completions", "tcsh"]);
    assert_eq!(r.code, 2, "an unknown shell is a usage error");
    let man = run(&["man"]);
    assert_eq!(man.code, 0);
    assert!(
        man.stdout.starts_with(".ie") || man.stdout.contains(".TH loadtest 1"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains(".TH loadtest 1"));
    assert!(
        man.stdout.contains("Exit codes"),
        "the exit codes are in the page"
    );
}
