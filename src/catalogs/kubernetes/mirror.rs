//! What one namespace's Kubernetes objects add up to (catalogs contract §3.5, §3.6): the
//! EndpointSlices (or Endpoints) and Pods as last read, and the instances they map to, kept per
//! service so that an event recomputes only the services it touches. No I/O.

use super::objects::{Pod, Source};
use crate::registry::instance::{Endpoint, Instance, UP};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of objects (as read) one resource of one namespace holds; objects beyond it are
/// refused, so a hostile server cannot grow memory without bound.
pub const MAX_RESOURCE_BYTES: usize = 64 << 20;
/// Most instances one namespace maps to. Endpoints × ports multiply: within the byte bound a
/// hostile server could otherwise ask for billions of instances.
pub const MAX_INSTANCES: usize = 100_000;
/// Most bytes of pod annotations the instances of one namespace carry together. A pod's
/// annotations are shared by its instances in memory, but every listing renders them once per
/// instance: one pod with large annotations behind many ports would otherwise make listings
/// without bound.
pub const MAX_METADATA_BYTES: usize = 64 << 20;
/// Most endpoint × port pairs looked at to map one service (duplicates included), so that
/// duplicated endpoints or ports cannot make one mapping take hours.
const MAX_PAIRS_PER_SERVICE: usize = 4 * MAX_INSTANCES;

/// Which of a namespace's two resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// EndpointSlices, or Endpoints in the fallback mode.
    Endpoints,
    Pods,
}

/// Why an object was not taken in.
#[derive(Debug, PartialEq, Eq)]
pub struct OverBudget;

#[derive(Default)]
pub struct Mirror {
    sources: BTreeMap<String, Source>,
    pods: HashMap<String, Arc<Pod>>,
    pods_by_uid: HashMap<String, Arc<Pod>>,
    bytes: [usize; 2],
    /// The mapped instances of each service.
    services: BTreeMap<String, Vec<Arc<Instance>>>,
    /// Instances in `services`, at most [`MAX_INSTANCES`].
    instance_count: usize,
    /// Metadata bytes of the instances in `services`, at most [`MAX_METADATA_BYTES`].
    metadata_bytes: usize,
    /// Whether a mapping left instances out at a bound since last asked.
    truncated: bool,
}

impl Mirror {
    /// Every instance of the namespace, by service name.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.services.values().flatten().cloned().collect()
    }

    /// Whether instances were left out at the bound since the last call.
    pub fn take_truncated(&mut self) -> bool {
        std::mem::take(&mut self.truncated)
    }

    #[cfg(test)]
    pub fn object_count(&self) -> usize {
        self.sources.len() + self.pods.len()
    }

    /// Replaces what `resource` holds with a complete list (objects absent from it are gone).
    /// Objects past the memory bound are left out; the result says whether any was.
    pub fn replace_sources(&mut self, list: Vec<Source>) -> Result<(), OverBudget> {
        self.sources.clear();
        self.bytes[0] = 0;
        let mut over = Ok(());
        for source in list {
            if self.bytes[0] + source.size > MAX_RESOURCE_BYTES {
                over = Err(OverBudget);
                continue;
            }
            self.bytes[0] += source.size;
            self.sources.insert(source.name.clone(), source);
        }
        self.remap_all();
        over
    }

    pub fn replace_pods(&mut self, list: Vec<Pod>) -> Result<(), OverBudget> {
        self.pods.clear();
        self.pods_by_uid.clear();
        self.bytes[1] = 0;
        let mut over = Ok(());
        for pod in list {
            if self.bytes[1] + pod.size > MAX_RESOURCE_BYTES {
                over = Err(OverBudget);
                continue;
            }
            self.bytes[1] += pod.size;
            let pod = Arc::new(pod);
            self.pods_by_uid.insert(pod.uid.clone(), pod.clone());
            self.pods.insert(pod.name.clone(), pod);
        }
        self.remap_all();
        over
    }

    /// An `ADDED` or `MODIFIED` slice or Endpoints object.
    pub fn upsert_source(&mut self, source: Source) -> Result<(), OverBudget> {
        let old = self.remove_source_only(&source.name);
        if self.bytes[0] + source.size > MAX_RESOURCE_BYTES {
            self.remap_services(old.into_iter().collect());
            return Err(OverBudget);
        }
        self.bytes[0] += source.size;
        let mut touched: HashSet<String> = old.into_iter().collect();
        touched.extend(source.service.clone());
        self.sources.insert(source.name.clone(), source);
        self.remap_services(touched);
        Ok(())
    }

    /// A `DELETED` slice or Endpoints object (or one that can no longer be read).
    pub fn remove_source(&mut self, name: &str) {
        let old = self.remove_source_only(name);
        self.remap_services(old.into_iter().collect());
    }

    /// Removes the source of that name; its service, if it had one.
    fn remove_source_only(&mut self, name: &str) -> Option<String> {
        let old = self.sources.remove(name)?;
        self.bytes[0] -= old.size;
        old.service
    }

    pub fn upsert_pod(&mut self, pod: Pod) -> Result<(), OverBudget> {
        let old_uid = self.remove_pod_only(&pod.name);
        if self.bytes[1] + pod.size > MAX_RESOURCE_BYTES {
            self.remap_pod_uids(old_uid.iter().map(String::as_str).collect());
            return Err(OverBudget);
        }
        self.bytes[1] += pod.size;
        let pod = Arc::new(pod);
        let mut uids: Vec<String> = old_uid.into_iter().collect();
        uids.push(pod.uid.clone());
        self.pods_by_uid.insert(pod.uid.clone(), pod.clone());
        self.pods.insert(pod.name.clone(), pod);
        self.remap_pod_uids(uids.iter().map(String::as_str).collect());
        Ok(())
    }

    pub fn remove_pod(&mut self, name: &str) {
        let old_uid = self.remove_pod_only(name);
        self.remap_pod_uids(old_uid.iter().map(String::as_str).collect());
    }

    fn remove_pod_only(&mut self, name: &str) -> Option<String> {
        let old = self.pods.remove(name)?;
        self.bytes[1] -= old.size;
        if self
            .pods_by_uid
            .get(&old.uid)
            .is_some_and(|p| Arc::ptr_eq(p, &old))
        {
            self.pods_by_uid.remove(&old.uid);
        }
        Some(old.uid.clone())
    }

    /// Recomputes the services with an endpoint of one of these pods.
    fn remap_pod_uids(&mut self, uids: HashSet<&str>) {
        if uids.is_empty() {
            return;
        }
        let touched: HashSet<String> = self
            .sources
            .values()
            .filter(|s| {
                s.groups.iter().any(|g| {
                    g.targets
                        .iter()
                        .any(|t| t.pod_uid.as_deref().is_some_and(|u| uids.contains(u)))
                })
            })
            .filter_map(|s| s.service.clone())
            .collect();
        self.remap_services(touched);
    }

    fn remap_all(&mut self) {
        let services: HashSet<String> = self
            .sources
            .values()
            .filter_map(|s| s.service.clone())
            .collect();
        self.services.clear();
        self.instance_count = 0;
        self.metadata_bytes = 0;
        self.remap_services(services);
    }

    fn remap_services(&mut self, services: HashSet<String>) {
        if services.is_empty() {
            return;
        }
        // One pass over the sources for all the services (not one per service: a list of many
        // single-slice services would be quadratic).
        let mut groups: HashMap<&str, Vec<(&str, &super::objects::Group)>> = HashMap::new();
        for source in self.sources.values() {
            let Some(service) = source.service.as_deref() else {
                continue;
            };
            if services.contains(service) {
                let entry = groups.entry(service).or_default();
                entry.extend(source.groups.iter().map(|g| (source.name.as_str(), g)));
            }
        }
        let mut mapped = Vec::with_capacity(services.len());
        let mut count = self.instance_count;
        let mut metadata = self.metadata_bytes;
        for service in &services {
            let old = self.services.get(service).map_or(&[][..], Vec::as_slice);
            count -= old.len();
            metadata -= metadata_bytes(old);
        }
        for service in services {
            let budget = Budget {
                instances: MAX_INSTANCES - count,
                metadata_bytes: MAX_METADATA_BYTES - metadata,
            };
            let (instances, truncated) = map_service(
                &service,
                groups.remove(service.as_str()),
                &self.pods_by_uid,
                budget,
            );
            count += instances.len();
            metadata += metadata_bytes(&instances);
            self.truncated |= truncated;
            mapped.push((service, instances));
        }
        self.instance_count = count;
        self.metadata_bytes = metadata;
        for (service, instances) in mapped {
            if instances.is_empty() {
                self.services.remove(&service);
            } else {
                self.services.insert(service, instances);
            }
        }
    }
}

/// What one service's mapping may still add.
struct Budget {
    instances: usize,
    metadata_bytes: usize,
}

fn metadata_bytes(instances: &[Arc<Instance>]) -> usize {
    instances
        .iter()
        .map(|i| i.metadata.as_ref().map_or(0, |m| m.get().len()))
        .sum()
}

/// The instances of one service from its groups (with the name of their source): one per ready
/// endpoint × mapped port, an id once (the one from an IPv4 group before IPv6 before FQDN, then
/// from the source whose name sorts first). Within `budget`; true when some were left out.
fn map_service(
    service: &str,
    groups: Option<Vec<(&str, &super::objects::Group)>>,
    pods_by_uid: &HashMap<String, Arc<Pod>>,
    budget: Budget,
) -> (Vec<Arc<Instance>>, bool) {
    let mut groups = groups.unwrap_or_default();
    // Stable: the groups of one Endpoints object keep their order.
    groups.sort_by(|(a_name, a), (b_name, b)| (a.family, a_name).cmp(&(b.family, b_name)));
    let mut seen = HashSet::new();
    let mut instances = Vec::new();
    let mut pairs = 0usize;
    let mut metadata = 0usize;
    for (_, group) in groups {
        for target in &group.targets {
            let pod = target.pod_uid.as_ref().and_then(|uid| pods_by_uid.get(uid));
            for port in &group.ports {
                pairs += 1;
                if instances.len() >= budget.instances || pairs > MAX_PAIRS_PER_SERVICE {
                    return (instances, true);
                }
                let id = match &target.pod_uid {
                    Some(uid) => format!("{uid}-{}", port.number),
                    None => format!("{}-{}", target.address, port.number),
                };
                if !seen.insert(id.clone()) {
                    continue;
                }
                let endpoint = Endpoint {
                    kind: port.kind,
                    value: format!("{}:{}", target.host, port.number),
                };
                let mut instance = Instance::new(&id, service, endpoint, UP, Duration::ZERO);
                if let Some(pod) = pod {
                    metadata += pod.annotations.get().len();
                    if metadata > budget.metadata_bytes {
                        return (instances, true);
                    }
                    instance.tags = pod.tags.clone();
                    // Shared with the pod: one copy however many ports.
                    instance.metadata = Some(pod.annotations.clone());
                }
                instances.push(Arc::new(instance));
            }
        }
    }
    (instances, false)
}

#[cfg(test)]
mod tests {
    use super::super::objects::{parse_pod, parse_slice};
    use super::*;
    use serde_json::value::RawValue;

    fn slice(name: &str, service: &str, family: &str, addresses: &[(&str, &str)]) -> Source {
        let endpoints: Vec<serde_json::Value> = addresses
            .iter()
            .map(|(address, uid)| {
                serde_json::json!({"addresses": [address], "targetRef": {"kind": "Pod", "uid": uid}})
            })
            .collect();
        let text = serde_json::json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": family, "endpoints": endpoints, "ports": [{"name": "http", "port": 80}]
        })
        .to_string();
        parse_slice(&RawValue::from_string(text).unwrap(), &mut Vec::new()).unwrap()
    }

    fn pod(name: &str, uid: &str, labels: &str) -> Pod {
        let text = format!(r#"{{"metadata":{{"name":"{name}","uid":"{uid}","labels":{labels}}}}}"#);
        parse_pod(&RawValue::from_string(text).unwrap()).unwrap()
    }

    fn listed(mirror: &Mirror) -> Vec<(String, String, Vec<String>)> {
        mirror
            .instances()
            .iter()
            .map(|i| (i.id.to_string(), i.endpoint.value.clone(), i.tags.clone()))
            .collect()
    }

    #[test]
    fn duplicates_keep_ipv4_then_the_first_slice_name() {
        let mut mirror = Mirror::default();
        mirror
            .replace_sources(vec![
                slice("web-b", "web", "IPv4", &[("10.0.0.2", "u1")]),
                slice("web-v6", "web", "IPv6", &[("fd00::1", "u1")]),
                slice("web-a", "web", "IPv4", &[("10.0.0.1", "u1")]),
            ])
            .unwrap();
        assert_eq!(
            listed(&mirror),
            [("u1-80".into(), "10.0.0.1:80".into(), vec![])]
        );
    }

    #[test]
    fn pod_events_change_only_tags_and_metadata() {
        let mut mirror = Mirror::default();
        mirror
            .replace_sources(vec![slice("web-a", "web", "IPv4", &[("10.0.0.1", "u1")])])
            .unwrap();
        mirror.upsert_pod(pod("p1", "u1", r#"{"v":"1"}"#)).unwrap();
        assert_eq!(
            listed(&mirror),
            [("u1-80".into(), "10.0.0.1:80".into(), vec!["v=1".into()])]
        );
        mirror.remove_pod("p1");
        assert_eq!(
            listed(&mirror),
            [("u1-80".into(), "10.0.0.1:80".into(), vec![])]
        );
        assert!(mirror.instances()[0].metadata.is_none());
        mirror.remove_source("web-a");
        assert!(mirror.instances().is_empty());
    }

    #[test]
    fn the_memory_bound_refuses_objects_beyond_it() {
        let mut mirror = Mirror::default();
        let mut big = pod("big", "u", "{}");
        big.size = MAX_RESOURCE_BYTES;
        mirror.upsert_pod(big).unwrap();
        assert_eq!(mirror.upsert_pod(pod("more", "v", "{}")), Err(OverBudget));
        // Replacing the big one with a small one fits.
        mirror.upsert_pod(pod("big", "u", "{}")).unwrap();
        mirror.upsert_pod(pod("more", "v", "{}")).unwrap();
        assert_eq!(mirror.object_count(), 2);
    }

    /// A slice of `endpoints` distinct pods × `ports` distinct ports.
    fn wide_slice(name: &str, service: &str, endpoints: usize, ports: usize) -> Source {
        let endpoints: Vec<serde_json::Value> = (0..endpoints)
            .map(|i| {
                serde_json::json!({"addresses": [format!("10.0.{}.{}", i / 250, i % 250)],
                "targetRef": {"kind": "Pod", "uid": format!("u{i}")}})
            })
            .collect();
        let ports: Vec<serde_json::Value> = (1..=ports)
            .map(|p| serde_json::json!({"port": p}))
            .collect();
        let text = serde_json::json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports
        })
        .to_string();
        parse_slice(&RawValue::from_string(text).unwrap(), &mut Vec::new()).unwrap()
    }

    #[test]
    fn large_annotations_behind_many_ports_are_shared_and_bounded() {
        let mut mirror = Mirror::default();
        // One pod of 1 MiB of annotations, behind one slice of 100 ports.
        let annotations = serde_json::json!({"big": "a".repeat(1 << 20)}).to_string();
        let text =
            format!(r#"{{"metadata":{{"name":"p","uid":"u0","annotations":{annotations}}}}}"#);
        let pod = parse_pod(&RawValue::from_string(text).unwrap()).unwrap();
        mirror.upsert_pod(pod).unwrap();
        mirror
            .replace_sources(vec![wide_slice("s", "web", 1, 100)])
            .unwrap();
        let instances = mirror.instances();
        // The listings render the annotations once per instance: 64 MiB of them at most.
        assert_eq!(instances.len(), MAX_METADATA_BYTES / annotations.len());
        assert!(mirror.take_truncated());
        // In memory the instances share the pod's one copy.
        let first = instances[0].metadata.as_ref().unwrap();
        assert!(instances
            .iter()
            .all(|i| Arc::ptr_eq(i.metadata.as_ref().unwrap(), first)));
        // Without the pod the ports all fit again.
        mirror.remove_pod("p");
        assert_eq!(mirror.instances().len(), 100);
    }

    #[test]
    fn endpoints_times_ports_stay_within_the_instance_bound() {
        let mut mirror = Mirror::default();
        // 2,000 × 1,000 = 2,000,000 pairs from a slice of well under a megabyte.
        let over = mirror.replace_sources(vec![wide_slice("big", "big", 2_000, 1_000)]);
        assert_eq!(mirror.instances().len(), MAX_INSTANCES);
        assert_eq!(over, Ok(()));
        assert!(mirror.take_truncated());
        assert!(!mirror.take_truncated());
        // The bound is for the namespace: another service gets nothing while it is full, and
        // room once the big one is gone.
        mirror
            .upsert_source(slice("small", "small", "IPv4", &[("10.1.0.1", "s1")]))
            .unwrap();
        assert_eq!(mirror.instances().len(), MAX_INSTANCES);
        mirror.remove_source("big");
        mirror
            .upsert_source(slice("small", "small", "IPv4", &[("10.1.0.1", "s1")]))
            .unwrap();
        assert_eq!(
            listed(&mirror),
            [("s1-80".into(), "10.1.0.1:80".into(), vec![])]
        );
    }

    #[test]
    fn repeated_ports_and_endpoints_do_not_multiply_the_work() {
        // 20,000 copies of one endpoint × 20,000 copies of one port: 400,000,000 pairs unless
        // repeats are cut short; one instance either way.
        let endpoints = vec![
            serde_json::json!({"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "uid": "u1"}});
            20_000
        ];
        let ports = vec![serde_json::json!({"name": "http", "port": 80}); 20_000];
        let text = serde_json::json!({
            "metadata": {"name": "dup", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports
        })
        .to_string();
        let source = parse_slice(&RawValue::from_string(text).unwrap(), &mut Vec::new()).unwrap();
        let mut mirror = Mirror::default();
        let started = std::time::Instant::now();
        mirror.replace_sources(vec![source]).unwrap();
        assert_eq!(
            listed(&mirror),
            [("u1-80".into(), "10.0.0.1:80".into(), vec![])]
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn many_single_slice_services_map_in_one_pass() {
        // 20,000 services of one slice each: a scan of every source per service would be
        // 400,000,000 steps.
        let sources: Vec<Source> = (0..20_000)
            .map(|i| {
                slice(
                    &format!("s{i}"),
                    &format!("svc{i}"),
                    "IPv4",
                    &[("10.0.0.1", &format!("u{i}"))],
                )
            })
            .collect();
        let mut mirror = Mirror::default();
        let started = std::time::Instant::now();
        mirror.replace_sources(sources).unwrap();
        assert_eq!(mirror.instances().len(), 20_000);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
