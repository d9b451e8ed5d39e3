//! The scenario loader on arbitrary text: no panic, no abort, no allocation proportional to a
//! declared population (the loader refuses more than 10 million devices before allocating).
//! Seeds: `scenarios/*.toml` (`cargo fuzz run scenario ../scenarios`).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = loadtest::scenario::Scenario::parse(Path::new("fuzz.toml"), text);
    }
});
