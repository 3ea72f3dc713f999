//! The replication codec on arbitrary bytes: cut into lines under a small limit, every line
//! decoded; nothing may panic, and every decoded message encodes to lines that decode again.
#![no_main]

use a8registry::cluster::codec::{decode, encode, LineDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = LineDecoder::new(64 * 1024);
    for chunk in data.chunks(7) {
        lines.push(chunk);
        while let Ok(Some(line)) = lines.next_line() {
            if let Ok(message) = decode(&line) {
                for again in encode(&message).lines() {
                    assert!(decode(again.as_bytes()).is_ok(), "{again:?} decodes again");
                }
            }
        }
    }
});
