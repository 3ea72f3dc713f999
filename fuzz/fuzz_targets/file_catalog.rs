//! Catalog files (`--catalog_dir`) through the parser the watcher uses: nothing may panic, every
//! instance it keeps has a service name and an endpoint, and the file limit holds.
#![no_main]

use a8registry::catalogs::files::{parse, MAX_FILE_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse(data) else {
        return;
    };
    assert!(data.len() as u64 <= MAX_FILE_BYTES);
    for instance in &parsed.instances {
        assert!(!instance.service_name.is_empty());
        assert!(!instance.endpoint.value.is_empty());
    }
});
