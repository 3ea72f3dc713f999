//! Kubernetes API bodies through the mapping the mirror uses: a list page, a watch line, and each
//! item as an EndpointSlice, an Endpoints object and a Pod. Nothing may panic.
#![no_main]

use a8registry::catalogs::kubernetes::objects::{
    name_of, parse_endpoints, parse_event, parse_page, parse_pod, parse_slice, Event,
};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fn map_object(raw: &RawValue) {
    let _ = name_of(raw);
    let mut skipped = Vec::new();
    let _ = parse_slice(raw, &mut skipped);
    let _ = parse_endpoints(raw, &mut skipped);
    let _ = parse_pod(raw);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = parse_page(data) {
        for item in &page.items {
            map_object(item);
        }
    }
    for line in data.split(|b| *b == b'\n') {
        if let Ok((Event::Upsert(raw) | Event::Deleted(raw), _)) = parse_event(line) {
            map_object(&raw);
        }
    }
});
