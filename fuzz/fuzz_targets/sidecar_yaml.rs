//! The sidecar's YAML subset on arbitrary text: nothing may panic, whatever it parses or refuses.
#![no_main]

use a8registry::sidecar::yaml::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(text);
    }
});
