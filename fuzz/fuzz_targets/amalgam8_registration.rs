//! Amalgam8 registration bodies (`POST /api/v1/instances`) through the decoder the handler uses.
//! Nothing may panic; an accepted body re-encoded as JSON decodes to the same instance.
#![no_main]

use a8registry::api::amalgam8::decode_instance;
use a8registry::registry::instance::Instance;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn encode(instance: &Instance) -> Vec<u8> {
    let mut body = json!({
        "service_name": &*instance.service_name,
        "endpoint": {"type": instance.endpoint.kind.as_str(), "value": instance.endpoint.value},
        "ttl": instance.ttl.as_secs(),
        "status": instance.status.as_str(),
        "tags": instance.tags,
    });
    if let Some(metadata) = &instance.metadata {
        let metadata: Value = serde_json::from_str(metadata.get()).expect("metadata is JSON");
        body["metadata"] = metadata;
    }
    serde_json::to_vec(&body).expect("JSON encodes")
}

fuzz_target!(|data: &[u8]| {
    let Ok(instance) = decode_instance(data) else {
        return;
    };
    assert!(!instance.service_name.is_empty());
    assert!(!instance.endpoint.value.is_empty());
    let again = decode_instance(&encode(&instance))
        .unwrap_or_else(|_| panic!("{instance:?} re-encoded is refused"));
    assert_eq!(again.id, instance.id);
    assert_eq!(again.service_name, instance.service_name);
    assert_eq!(again.endpoint, instance.endpoint);
    assert_eq!(again.status.as_str(), instance.status.as_str());
    assert_eq!(again.ttl, instance.ttl);
    assert_eq!(again.tags, instance.tags);
    let meaning = |i: &Instance| {
        i.metadata
            .as_ref()
            .map(|m| serde_json::from_str::<Value>(m.get()).unwrap())
    };
    assert_eq!(meaning(&again), meaning(&instance));
});
