//! Eureka JSON registrations (`POST /eureka/v2/apps/{app}`) through the decoder the handler uses:
//! nothing may panic, and an accepted registration renders to documents that read back the same.
#![no_main]

#[path = "shared/eureka.rs"]
mod eureka;

use a8registry::api::eureka::model::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(instance) = decode(data, false, "APP") {
        eureka::check_rendering(&instance);
    }
});
