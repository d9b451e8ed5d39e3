//! The scenario loader never panics or aborts: thousands of seeded mutations of every shipped
//! scenario (lines dropped or repeated, numbers replaced by extremes, bytes inserted) each load
//! or give a located error. (`fuzz/fuzz_targets/scenario.rs` does the same coverage-guided.)

use std::path::Path;

use loadtest::scenario::Scenario;
use rand::{Rng as _, SeedableRng as _};

const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "1e-30",
    "1e308",
    "nan",
    "inf",
    "9223372036854775807",
    "18446744073709551615",
    "1000000000000",
    "\"\"",
    "[]",
    "{}",
    "\"${LOADTEST_UNSET_VARIABLE}\"",
];

fn mutate(text: &str, rng: &mut rand_chacha::ChaCha8Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..rng.gen_range(1..4) {
        if lines.is_empty() {
            break;
        }
        let i = rng.gen_range(0..lines.len());
        match rng.gen_range(0..4) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                // Replace the value of a `key = value` line with an extreme.
                if let Some((k, _)) = lines[i].split_once('=') {
                    let v = EXTREMES[rng.gen_range(0..EXTREMES.len())];
                    lines[i] = format!("{k}= {v}");
                }
            }
            _ => {
                let at = rng.gen_range(0..=lines[i].len());
                if lines[i].is_char_boundary(at) {
                    let junk: String = (0..rng.gen_range(1..8))
                        .map(|_| char::from(rng.gen_range(0x20u8..0x7f)))
                        .collect();
                    lines[i].insert_str(at, &junk);
                }
            }
        }
    }
    lines.join("\n")
}

#[test]
fn mutated_scenarios_load_or_fail_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let (mut ok, mut refused) = (0, 0);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for _ in 0..300 {
            let m = mutate(&text, &mut rng);
            match Scenario::parse(Path::new("m.toml"), &m) {
                Ok(_) => ok += 1,
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.len() < 2_000, "an error of {} bytes", msg.len());
                    refused += 1;
                }
            }
        }
    }
    // Both kinds happen: the mutations are neither all harmless nor all fatal.
    assert!(ok > 0 && refused > 0, "{ok} loaded, {refused} refused");
}
