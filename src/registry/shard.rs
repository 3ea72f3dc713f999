//! One shard of a namespace in the in-memory store: its instances by id and by service, the
//! tombstones it keeps, and the secondary indexes Eureka's lookups use.
//!
//! Most namespaces hold a few instances, so a shard starts as a short list that every lookup
//! scans (a list of one entry allocates 32 bytes; the hash maps of the indexed form allocate
//! about 500 for one entry). Past [`MAX_LISTED`] entries the scan would cost more than a hash,
//! so the shard builds its indexes; it drops them again when it shrinks to half that.
//!
//! The caller holds the shard's lock for every call and checks liveness (a deadline passed)
//! itself: the shard stores what it is given.

use super::instance::Instance;
use super::keyed_hash::{KeyedMap, KeyedState};
use super::store::{Lookup, Tombstone};
use super::version::Version;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Most entries a shard keeps as a list.
pub const MAX_LISTED: usize = 8;
/// Most `:`-separated suffixes of one id that the suffix index keeps; ids with more are kept in
/// a short list that suffix lookups check one by one (only a client that makes such ids pays).
const MAX_INDEXED_SUFFIXES: usize = 16;

pub struct Entry {
    /// Shared with change events (the Eureka change log keeps them for minutes): a heartbeat
    /// updates its atomic timestamp in place, a modification replaces the whole `Arc`.
    pub instance: Arc<Instance>,
    /// Monotonic nanoseconds after which the entry is expired; `None` never expires.
    pub deadline: Option<u64>,
}

impl Entry {
    pub fn live(&self, now: u64) -> bool {
        self.deadline.is_none_or(|d| now <= d)
    }
}

pub struct KeptTombstone {
    pub tombstone: Tombstone,
    /// Monotonic nanoseconds after which it may be forgotten.
    pub until: u64,
}

/// The secondary indexes of an indexed shard: id suffixes (hashed) and Eureka VIPs → ids.
#[derive(Default)]
struct Secondary {
    /// Hash of each suffix after a `:` of an id → the ids with that suffix.
    suffixes: KeyedMap<u64, Vec<Arc<str>>>,
    /// Ids with more than [`MAX_INDEXED_SUFFIXES`] suffixes.
    deep: Vec<Arc<str>>,
    vips: KeyedMap<Arc<str>, Vec<Arc<str>>>,
    secure_vips: KeyedMap<Arc<str>, Vec<Arc<str>>>,
}

fn suffix_hash(suffix: &str) -> u64 {
    KeyedState::default().hash_one(suffix)
}

fn unlist<K, Q>(map: &mut KeyedMap<K, Vec<Arc<str>>>, key: &Q, id: &Arc<str>)
where
    K: Eq + Hash + std::borrow::Borrow<Q>,
    Q: Eq + Hash + ?Sized,
{
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|listed| listed != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

impl Secondary {
    fn add(&mut self, instance: &Instance) {
        let id = &instance.id;
        if instance.id_suffixes().nth(MAX_INDEXED_SUFFIXES).is_some() {
            self.deep.push(id.clone());
        } else {
            for suffix in instance.id_suffixes() {
                let ids = self.suffixes.entry(suffix_hash(suffix)).or_default();
                // An id lists a hash once, even when two of its suffixes share it.
                if !ids.contains(id) {
                    ids.push(id.clone());
                }
            }
        }
        let [vip, secure_vip] = instance.vip_keys();
        for (map, key) in [(&mut self.vips, vip), (&mut self.secure_vips, secure_vip)] {
            if let Some(key) = key {
                map.entry(key.into()).or_default().push(id.clone());
            }
        }
    }

    fn remove(&mut self, instance: &Instance) {
        let id = &instance.id;
        if instance.id_suffixes().nth(MAX_INDEXED_SUFFIXES).is_some() {
            self.deep.retain(|listed| listed != id);
        } else {
            for suffix in instance.id_suffixes() {
                unlist(&mut self.suffixes, &suffix_hash(suffix), id);
            }
        }
        let [vip, secure_vip] = instance.vip_keys();
        if let Some(vip) = vip {
            unlist(&mut self.vips, vip, id);
        }
        if let Some(secure_vip) = secure_vip {
            unlist(&mut self.secure_vips, secure_vip, id);
        }
    }

    /// Candidate ids for the lookup; callers check each against the instance itself.
    fn candidates(&self, lookup: Lookup) -> Vec<Arc<str>> {
        match lookup {
            Lookup::IdSuffix(suffix) => {
                let mut ids = self
                    .suffixes
                    .get(&suffix_hash(suffix))
                    .cloned()
                    .unwrap_or_default();
                ids.extend(self.deep.iter().cloned());
                ids
            }
            Lookup::Vip(key) => self.vips.get(key).cloned().unwrap_or_default(),
            Lookup::SecureVip(key) => self.secure_vips.get(key).cloned().unwrap_or_default(),
        }
    }
}

/// The indexed form of a shard's entries.
#[derive(Default)]
struct Indexed {
    /// id → service, to find an entry by id alone.
    service_of: KeyedMap<Arc<str>, Arc<str>>,
    /// service → id → entry.
    services: KeyedMap<Arc<str>, KeyedMap<Arc<str>, Entry>>,
    secondary: Secondary,
}

impl Indexed {
    fn get(&self, id: &str) -> Option<&Entry> {
        let service = self.service_of.get(id)?;
        self.services.get(service)?.get(id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let service = self.service_of.get(id)?;
        self.services.get_mut(service)?.get_mut(id)
    }

    fn insert(&mut self, entry: Entry) {
        self.secondary.add(&entry.instance);
        let id = entry.instance.id.clone();
        let service = entry.instance.service_name.clone();
        self.service_of.insert(id.clone(), service.clone());
        self.services.entry(service).or_default().insert(id, entry);
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let service = self.service_of.remove(id)?;
        let instances = self.services.get_mut(&service)?;
        let entry = instances.remove(id);
        if instances.is_empty() {
            self.services.remove(&service);
        }
        if let Some(entry) = &entry {
            self.secondary.remove(&entry.instance);
        }
        entry
    }
}

/// A shard's entries: a list while they are few, indexed beyond.
enum Entries {
    Listed(Vec<Entry>),
    Indexed(Box<Indexed>),
}

pub struct Shard {
    entries: Entries,
    /// Made with the first tombstone: only cluster nodes keep them.
    tombstones: Option<Box<KeyedMap<Arc<str>, KeptTombstone>>>,
    /// No entry expires before this (monotonic nanoseconds), so the reaper can skip the shard
    /// until then. Heartbeats only move deadlines later, so they never need to lower it.
    pub earliest_deadline: u64,
    /// Set on a namespace's first shard once it handed its entries to the namespace's spread
    /// shards: it stays empty from then on, and whoever finds it so looks there instead.
    pub moved: bool,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            entries: Entries::Listed(Vec::new()),
            tombstones: None,
            earliest_deadline: u64::MAX,
            moved: false,
        }
    }
}

impl Shard {
    /// Entries held, live or expired-not-yet-removed.
    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Listed(list) => list.len(),
            Entries::Indexed(indexed) => indexed.service_of.len(),
        }
    }

    pub fn note_deadline(&mut self, deadline: Option<u64>) {
        if let Some(deadline) = deadline {
            self.earliest_deadline = self.earliest_deadline.min(deadline);
        }
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        match &self.entries {
            Entries::Listed(list) => list.iter().find(|e| *e.instance.id == *id),
            Entries::Indexed(indexed) => indexed.get(id),
        }
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        match &mut self.entries {
            Entries::Listed(list) => list.iter_mut().find(|e| *e.instance.id == *id),
            Entries::Indexed(indexed) => indexed.get_mut(id),
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        let removed = match &mut self.entries {
            Entries::Listed(list) => {
                let at = list.iter().position(|e| *e.instance.id == *id)?;
                let entry = list.swap_remove(at);
                if list.capacity() > list.len() + 1 {
                    list.shrink_to_fit();
                }
                Some(entry)
            }
            Entries::Indexed(indexed) => indexed.remove(id),
        };
        if matches!(self.entries, Entries::Indexed(_)) && self.len() <= MAX_LISTED / 2 {
            let entries = self.take_entries();
            self.entries = Entries::Listed(entries);
        }
        removed
    }

    /// The shard's copy of a service's name, while it holds an instance of that service: the
    /// instances of a service share one.
    pub fn service_name(&self, name: &str) -> Option<&Arc<str>> {
        match &self.entries {
            Entries::Listed(list) => list
                .iter()
                .map(|e| &e.instance.service_name)
                .find(|held| ***held == *name),
            Entries::Indexed(indexed) => indexed.services.get_key_value(name).map(|(held, _)| held),
        }
    }

    /// Inserts a live entry, whose id the shard does not hold; a tombstone of its id goes
    /// (counted down in `tombstones`).
    pub fn insert(&mut self, entry: Entry, tombstones: &AtomicUsize) {
        self.note_deadline(entry.deadline);
        if self.forget_tombstone(&entry.instance.id) {
            tombstones.fetch_sub(1, Ordering::SeqCst);
        }
        match &mut self.entries {
            Entries::Listed(list) if list.len() < MAX_LISTED => {
                // One at a time: most lists hold one entry for their whole life.
                list.reserve_exact(1);
                list.push(entry);
            }
            Entries::Listed(list) => {
                let mut indexed = Box::<Indexed>::default();
                for listed in std::mem::take(list) {
                    indexed.insert(listed);
                }
                indexed.insert(entry);
                self.entries = Entries::Indexed(indexed);
            }
            Entries::Indexed(indexed) => indexed.insert(entry),
        }
    }

    /// Takes every entry out, leaving the shard's entries empty.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        match std::mem::replace(&mut self.entries, Entries::Listed(Vec::new())) {
            Entries::Listed(list) => list,
            Entries::Indexed(indexed) => indexed
                .services
                .into_values()
                .flat_map(|entries| entries.into_values())
                .collect(),
        }
    }

    /// Every entry, live or not.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        let (listed, indexed) = match &self.entries {
            Entries::Listed(list) => (Some(list.iter()), None),
            Entries::Indexed(indexed) => (
                None,
                Some(indexed.services.values().flat_map(|m| m.values())),
            ),
        };
        listed
            .into_iter()
            .flatten()
            .chain(indexed.into_iter().flatten())
    }

    /// The entries of one service, live or not.
    pub fn service_entries<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Entry> {
        let (listed, indexed) = match &self.entries {
            Entries::Listed(list) => (
                Some(
                    list.iter()
                        .filter(move |e| *e.instance.service_name == *service),
                ),
                None,
            ),
            Entries::Indexed(indexed) => (None, indexed.services.get(service)),
        };
        listed
            .into_iter()
            .flatten()
            .chain(indexed.into_iter().flat_map(|m| m.values()))
    }

    /// The services with a live entry at `now`; a listed shard may name one more than once.
    pub fn live_services(&self, now: u64) -> impl Iterator<Item = &Arc<str>> {
        let (listed, indexed) = match &self.entries {
            Entries::Listed(list) => (
                Some(
                    list.iter()
                        .filter(move |e| e.live(now))
                        .map(|e| &e.instance.service_name),
                ),
                None,
            ),
            Entries::Indexed(indexed) => (
                None,
                Some(
                    indexed
                        .services
                        .iter()
                        .filter(move |(_, entries)| entries.values().any(|e| e.live(now)))
                        .map(|(name, _)| name),
                ),
            ),
        };
        listed
            .into_iter()
            .flatten()
            .chain(indexed.into_iter().flatten())
    }

    /// Adds the live instances at `now` that `lookup` asks for to `found`.
    pub fn find(&self, lookup: Lookup, now: u64, found: &mut Vec<Arc<Instance>>) {
        let wanted = |entry: &Entry| entry.live(now) && lookup.matches(&entry.instance);
        match &self.entries {
            Entries::Listed(list) => found.extend(
                list.iter()
                    .filter(|e| wanted(e))
                    .map(|e| e.instance.clone()),
            ),
            Entries::Indexed(indexed) => {
                for id in indexed.secondary.candidates(lookup) {
                    if let Some(entry) = indexed.get(&id).filter(|e| wanted(e)) {
                        found.push(entry.instance.clone());
                    }
                }
            }
        }
    }

    /// The version held for `id`, live or dead: what a record from elsewhere must beat.
    pub fn held(&self, id: &str) -> Option<(Version, Option<&Entry>, Option<&Tombstone>)> {
        if let Some(entry) = self.get(id) {
            return Some((entry.instance.version, Some(entry), None));
        }
        self.tombstone(id)
            .map(|kept| (kept.tombstone.version, None, Some(&kept.tombstone)))
    }

    pub fn tombstone(&self, id: &str) -> Option<&KeptTombstone> {
        self.tombstones.as_ref()?.get(id)
    }

    /// Every tombstone kept.
    pub fn tombstones(&self) -> impl Iterator<Item = &KeptTombstone> {
        self.tombstones.iter().flat_map(|kept| kept.values())
    }

    /// Keeps a tombstone of `id` (replacing one it had); true when the shard had none.
    pub fn keep_tombstone(&mut self, id: Arc<str>, kept: KeptTombstone) -> bool {
        self.tombstones
            .get_or_insert_with(Box::default)
            .insert(id, kept)
            .is_none()
    }

    /// Forgets the tombstone of `id`; true when there was one.
    fn forget_tombstone(&mut self, id: &str) -> bool {
        let Some(kept) = &mut self.tombstones else {
            return false;
        };
        let forgotten = kept.remove(id).is_some();
        if kept.is_empty() {
            self.tombstones = None;
        }
        forgotten
    }

    /// Forgets the tombstones kept until before `now`; returns how many went.
    pub fn prune_tombstones(&mut self, now: u64) -> usize {
        let Some(kept) = &mut self.tombstones else {
            return 0;
        };
        let before = kept.len();
        kept.retain(|_, kept| kept.until >= now);
        let dropped = before - kept.len();
        if kept.is_empty() {
            self.tombstones = None;
        }
        dropped
    }

    /// Takes every tombstone out.
    pub fn take_tombstones(&mut self) -> Vec<(Arc<str>, KeptTombstone)> {
        self.tombstones
            .take()
            .map(|kept| kept.into_iter().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType};
    use std::time::Duration;

    fn entry(id: &str, service: &str, deadline: Option<u64>) -> Entry {
        let endpoint = Endpoint {
            kind: EndpointType::Tcp,
            value: format!("{id}:80"),
        };
        let instance = Instance::new(id, service, endpoint, "UP", Duration::from_secs(30));
        Entry {
            instance: Arc::new(instance),
            deadline,
        }
    }

    fn sorted<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut ids: Vec<String> = ids.map(String::from).collect();
        ids.sort();
        ids
    }

    /// The same answers whether the shard is a list or indexed, as it grows and shrinks.
    #[test]
    fn listed_and_indexed_shards_answer_alike() {
        let mut shard = Shard::default();
        let tombstones = AtomicUsize::new(0);
        let mut held: Vec<String> = Vec::new();
        for n in 0..3 * MAX_LISTED {
            let id = format!("APP:h{n}:80");
            let service = if n % 2 == 0 { "even" } else { "odd" };
            shard.insert(entry(&id, service, Some(n as u64)), &tombstones);
            held.push(id.clone());
            held.sort();
            assert_eq!(shard.len(), held.len());
            assert_eq!(
                sorted(shard.entries().map(|e| &*e.instance.id)),
                held,
                "{n}"
            );
            assert_eq!(
                shard.service_entries("even").count(),
                held.len().div_ceil(2)
            );
            assert!(shard.get(&id).is_some() && shard.get_mut(&id).is_some());
            let mut found = Vec::new();
            shard.find(Lookup::IdSuffix("80"), 0, &mut found);
            assert_eq!(found.len(), held.len(), "every id ends in :80");
            found.clear();
            shard.find(Lookup::IdSuffix(&format!("h{n}:80")), 0, &mut found);
            assert_eq!(found.len(), 1);
        }
        assert_eq!(shard.earliest_deadline, 0);
        let mut services: Vec<_> = shard.live_services(5).map(|s| s.to_string()).collect();
        services.sort();
        services.dedup();
        assert_eq!(services, ["even", "odd"]);
        assert_eq!(
            shard.live_services(u64::MAX).count(),
            0,
            "nothing lives for ever"
        );
        while let Some(id) = held.pop() {
            assert!(shard.remove(&id).is_some());
            assert!(shard.get(&id).is_none() && shard.remove(&id).is_none());
            assert_eq!(sorted(shard.entries().map(|e| &*e.instance.id)), held);
            let mut found = Vec::new();
            shard.find(Lookup::IdSuffix("80"), 0, &mut found);
            assert_eq!(found.len(), held.len());
        }
        assert!(matches!(&shard.entries, Entries::Listed(list) if list.capacity() == 0));
    }

    #[test]
    fn tombstones_are_kept_on_demand_and_an_insert_forgets_its_own() {
        let mut shard = Shard::default();
        let counted = AtomicUsize::new(0);
        assert!(shard.tombstones.is_none());
        let kept = |id: &str, until| {
            let gone = entry(id, "s", None).instance;
            KeptTombstone {
                tombstone: Tombstone {
                    id: gone.id.clone(),
                    service_name: gone.service_name.clone(),
                    version: gone.version,
                    registration: gone.registration,
                    expired_at_unix_millis: None,
                },
                until,
            }
        };
        for (id, until) in [("a", 10), ("b", 20)] {
            assert!(shard.keep_tombstone(id.into(), kept(id, until)));
            counted.fetch_add(1, Ordering::SeqCst);
        }
        assert!(!shard.keep_tombstone("a".into(), kept("a", 10)));
        assert!(shard
            .held("a")
            .is_some_and(|(_, live, t)| live.is_none() && t.is_some()));
        shard.insert(entry("a", "s", None), &counted);
        assert_eq!(counted.load(Ordering::SeqCst), 1);
        assert!(shard.held("a").is_some_and(|(_, live, _)| live.is_some()));
        assert_eq!(shard.prune_tombstones(15), 0);
        assert_eq!(shard.prune_tombstones(21), 1);
        assert!(shard.tombstones.is_none(), "the last one frees the map");
        assert_eq!(shard.tombstones().count(), 0);
    }
}
