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
}

impl Mirror {
    /// Every instance of the namespace, by service name.
    pub fn instances(&self) -> Vec<Arc<Instance>> {
        self.services.values().flatten().cloned().collect()
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
        self.remap_services(services);
    }

    fn remap_services(&mut self, services: HashSet<String>) {
        for service in services {
            let instances = self.map_service(&service);
            if instances.is_empty() {
                self.services.remove(&service);
            } else {
                self.services.insert(service, instances);
            }
        }
    }

    /// The instances of one service: one per ready endpoint × mapped port, an id once (the one
    /// from an IPv4 group before IPv6 before FQDN, then from the source whose name sorts first).
    fn map_service(&self, service: &str) -> Vec<Arc<Instance>> {
        let mut groups: Vec<(&str, &super::objects::Group)> = self
            .sources
            .values()
            .filter(|s| s.service.as_deref() == Some(service))
            .flat_map(|s| s.groups.iter().map(move |g| (s.name.as_str(), g)))
            .collect();
        // Stable: the groups of one Endpoints object keep their order.
        groups.sort_by(|(a_name, a), (b_name, b)| (a.family, a_name).cmp(&(b.family, b_name)));
        let mut seen = HashSet::new();
        let mut instances = Vec::new();
        for (_, group) in groups {
            for target in &group.targets {
                let pod = target
                    .pod_uid
                    .as_ref()
                    .and_then(|uid| self.pods_by_uid.get(uid));
                for port in &group.ports {
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
                        instance.tags = pod.tags.clone();
                        instance.metadata = Some(pod.annotations.clone());
                    }
                    instances.push(Arc::new(instance));
                }
            }
        }
        instances
    }
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
}
