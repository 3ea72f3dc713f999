//! RESP2 replies as the Redis links read them: arbitrary bytes, read one reply after another
//! until an error. Nothing may panic; a reply is never deeper than the reader's bound, and a
//! value re-encoded as RESP reads back equal.
#![no_main]

use a8registry::store::redis::resp::{read_reply, Reply, Value};
use libfuzzer_sys::fuzz_target;
use std::io::BufReader;

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::BulkString(bytes) => {
            out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode(item, out);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // A small buffer, so replies cross buffer refills.
    let mut reader = BufReader::with_capacity(7, data);
    for _ in 0..64 {
        let Ok(reply) = read_reply(&mut reader) else {
            return;
        };
        if let Reply::Value(value) = reply {
            assert!(depth(&value) <= 17, "a reply nested deeper than the bound");
            let mut bytes = Vec::new();
            encode(&value, &mut bytes);
            let again = read_reply(&mut &bytes[..]).expect("a re-encoded reply reads back");
            assert_eq!(again, Reply::Value(value));
        }
    }
});
