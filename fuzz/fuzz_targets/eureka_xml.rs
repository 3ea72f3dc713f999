//! Eureka XML registrations through the decoder the handler uses: nothing may panic, the XML
//! reader's JSON is JSON, and an accepted registration renders to documents that read back the
//! same.
#![no_main]

#[path = "shared/eureka.rs"]
mod eureka;

use a8registry::api::eureka::model::decode;
use a8registry::api::eureka::xml::registration_to_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(converted) = registration_to_json(data) {
        let _: serde_json::Value =
            serde_json::from_str(&converted.json).expect("the reader's JSON is JSON");
    }
    if let Ok(instance) = decode(data, true, "APP") {
        eureka::check_rendering(&instance);
    }
});
