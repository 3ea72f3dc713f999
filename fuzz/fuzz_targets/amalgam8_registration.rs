//! Amalgam8 registration bodies (`POST /api/v1/instances`) through the decoder the handler uses.
//! Nothing may panic; an accepted body re-encoded as JSON decodes to the same instance.
#![no_main]

use a8registry::api::amalgam8::decode_instance;
use a8registry::registry::instance::Instance;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fn encode(instance: &Instance, service_name: &str) -> Vec<u8> {
    let body = json!({
        "service_name": service_name,
        "endpoint": {"type": instance.endpoint.kind.as_str(), "value": instance.endpoint.value},
        "ttl": instance.ttl.as_secs(),
        "status": instance.status.as_str(),
        "tags": instance.tags,
    });
    let mut text = body.to_string();
    // Metadata is kept as the client wrote it; it goes back verbatim.
    if let Some(metadata) = &instance.metadata {
        text.pop();
        text.push_str(",\"metadata\":");
        text.push_str(metadata.get());
        text.push('}');
    }
    text.into_bytes()
}

fuzz_target!(|data: &[u8]| {
    // The instance comes unnamed, its service name beside it (borrowed from the body).
    let Ok((instance, service_name)) = decode_instance(data) else {
        return;
    };
    assert!(!service_name.is_empty());
    assert!(!instance.endpoint.value.is_empty());
    let encoded = encode(&instance, &service_name);
    let (again, again_name) =
        decode_instance(&encoded).unwrap_or_else(|_| panic!("{instance:?} re-encoded is refused"));
    assert_eq!(again.id, instance.id);
    assert_eq!(&*again_name, &*service_name);
    assert_eq!(again.endpoint, instance.endpoint);
    assert_eq!(again.status.as_str(), instance.status.as_str());
    assert_eq!(again.ttl, instance.ttl);
    assert_eq!(again.tags, instance.tags);
    assert_eq!(
        again.metadata.as_ref().map(|m| m.get()),
        instance.metadata.as_ref().map(|m| m.get())
    );
});
