//! The SAS parser and verifier on arbitrary tokens: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loadtest::sas::SasToken;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = SasToken::parse(s) {
            let _ = t.resource();
            let _ = t.verify(b"0123456789abcdef0123456789abcdef");
        }
    }
});
