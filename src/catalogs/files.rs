//! The file catalog (contract §5): `<N>.json` and `<N>.conf` in one directory, the original's
//! JSON format, checked every second by one plain thread.
//!
//! A namespace is never turned into a path: the thread lists the directory and loads every
//! candidate file under the namespace its name gives, and requests only look loaded contents up
//! by name (W21).

use super::{Catalogs, Health, SourceKind};
use crate::registry::instance::{
    derive_id, Endpoint, EndpointType, Instance, MAX_ENDPOINT_VALUE_BYTES, MAX_SERVICE_NAME_BYTES,
    MAX_STATUS_BYTES, UP,
};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often the directory is listed and its files checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A file is read again at least this often, even when nothing about it seems to change.
const REREAD_INTERVAL: Duration = Duration::from_secs(30);
/// Largest catalog file; a larger one is unparsable.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Deepest JSON nesting a catalog file may have (D15).
pub const MAX_NESTING: usize = 64;
/// The tag every file instance carries last.
const FILE_TAG: &str = "filesystem";

/// The namespace a directory entry's name gives, if it is a candidate's name.
fn namespace_of(file_name: &str) -> Option<(&str, bool)> {
    let (namespace, is_json) = if let Some(n) = file_name.strip_suffix(".json") {
        (n, true)
    } else {
        (file_name.strip_suffix(".conf")?, false)
    };
    (!namespace.is_empty() && !namespace.starts_with('.')).then_some((namespace, is_json))
}

/// Fails when `text` nests arrays and objects deeper than [`MAX_NESTING`] (strings skipped).
fn check_nesting(text: &[u8]) -> Result<(), String> {
    if !crate::nesting::nesting_within(text, MAX_NESTING) {
        Err(format!("nested deeper than {MAX_NESTING} levels"))
    } else if !crate::nesting::surrogate_escapes_paired(text) {
        Err("a \\u escape of a surrogate without its pair".into())
    } else {
        Ok(())
    }
}

/// A file's content: its good entries and the reasons its bad ones were skipped (by index).
#[derive(Debug)]
pub struct Parsed {
    pub instances: Vec<Arc<Instance>>,
    pub skipped: Vec<(usize, String)>,
}

/// Reads a catalog file's text; `Err` when it is unparsable (its previous content then stays).
pub fn parse(text: &[u8]) -> Result<Parsed, String> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    check_nesting(text)?;
    let top: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(text).map_err(|e| format!("not one JSON object: {e}"))?;
    let mut parsed = Parsed {
        instances: Vec::new(),
        skipped: Vec::new(),
    };
    let entries: Vec<Box<RawValue>> = match top.get("instances") {
        None => return Ok(parsed),
        Some(raw) if raw.get() == "null" => return Ok(parsed),
        Some(raw) => serde_json::from_slice(raw.get().as_bytes())
            .map_err(|_| "\"instances\" is not an array".to_string())?,
    };
    for (at, entry) in entries.iter().enumerate() {
        match entry_instance(entry) {
            Ok(instance) => parsed.instances.push(Arc::new(instance)),
            Err(why) => parsed.skipped.push((at, why)),
        }
    }
    Ok(parsed)
}

/// A text field: `Ok(None)` when absent or `null`, `Err` when of another type.
fn optional_text(
    fields: &BTreeMap<String, Box<RawValue>>,
    name: &str,
) -> Result<Option<String>, String> {
    match fields
        .get(name)
        .map(|raw| serde_json::from_slice::<Value>(raw.get().as_bytes()))
    {
        None => Ok(None),
        Some(Ok(Value::Null)) => Ok(None),
        Some(Ok(Value::String(text))) => Ok(Some(text)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

/// Maps one entry of `instances` (contract §5.2), or says why it is bad.
fn entry_instance(entry: &RawValue) -> Result<Instance, String> {
    let fields: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(entry.get().as_bytes()).map_err(|_| "not an object".to_string())?;
    let service_name = optional_text(&fields, "service_name")?
        .ok_or_else(|| "service_name is missing".to_string())?;
    if service_name.is_empty() || service_name.len() > MAX_SERVICE_NAME_BYTES {
        return Err(format!(
            "service_name is empty or longer than {MAX_SERVICE_NAME_BYTES} bytes"
        ));
    }
    let endpoint: BTreeMap<String, Box<RawValue>> = match fields.get("endpoint") {
        None => return Err("endpoint is missing".into()),
        Some(raw) => serde_json::from_slice(raw.get().as_bytes())
            .map_err(|_| "endpoint is not an object".to_string())?,
    };
    let kind = optional_text(&endpoint, "type")
        .ok()
        .flatten()
        .and_then(|t| EndpointType::parse(&t))
        .ok_or_else(|| "endpoint.type is not one of tcp, udp, http, https, user".to_string())?;
    let value = optional_text(&endpoint, "value")?
        .ok_or_else(|| "endpoint.value is missing".to_string())?;
    if value.is_empty() || value.len() > MAX_ENDPOINT_VALUE_BYTES {
        return Err(format!(
            "endpoint.value is empty or longer than {MAX_ENDPOINT_VALUE_BYTES} bytes"
        ));
    }
    let status = optional_text(&fields, "status")?.unwrap_or_default();
    if status.len() > MAX_STATUS_BYTES {
        return Err(format!("status is longer than {MAX_STATUS_BYTES} bytes"));
    }
    let mut tags: Vec<String> = match fields.get("tags").map(|raw| raw.get()) {
        None | Some("null") => Vec::new(),
        Some(raw) => {
            serde_json::from_slice(raw.as_bytes()).map_err(|_| "tags is not an array of strings")?
        }
    };
    tags.push(FILE_TAG.to_string());
    let endpoint = Endpoint { kind, value };
    let id = derive_id(&service_name, &endpoint);
    let status = if status.is_empty() { UP } else { &status };
    let mut instance = Instance::new(&id, &service_name, endpoint, status, Duration::ZERO);
    instance.tags = tags;
    instance.metadata = fields.get("metadata").map(|m| Arc::from(m.clone()));
    Ok(instance)
}

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    size: u64,
    inode: u64,
}

struct Loaded {
    stamp: Option<Stamp>,
    read_at: Instant,
    instances: Vec<Arc<Instance>>,
    /// Why the latest read failed, while it does.
    unparsable: Option<String>,
}

/// The file catalog's thread state.
struct FileCatalog {
    directory: PathBuf,
    catalogs: Arc<Catalogs>,
    health: Arc<Health>,
    /// Per file name.
    loaded: HashMap<String, Loaded>,
    published: HashSet<String>,
}

/// Starts the file catalog of `directory` on a thread of its own.
pub fn start(directory: &Path, catalogs: Arc<Catalogs>) -> std::io::Result<()> {
    let health = Arc::new(Health::new(SourceKind::Files, {
        let mut extra = Map::new();
        extra.insert("files".into(), 0.into());
        extra
    }));
    catalogs.add_source(health.clone());
    let mut catalog = FileCatalog {
        directory: directory.to_path_buf(),
        catalogs,
        health,
        loaded: HashMap::new(),
        published: HashSet::new(),
    };
    std::thread::Builder::new()
        .name("catalog-files".into())
        .spawn(move || loop {
            catalog.check();
            std::thread::sleep(CHECK_INTERVAL);
        })
        .map(|_| ())
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, and judged on what was opened: a FIFO or device put in the file's place
    // after it was listed neither blocks the open nor is read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut text)?;
    Ok(text)
}

impl FileCatalog {
    /// One check: list the directory, read what changed, publish every namespace's entries.
    fn check(&mut self) {
        let listing = match std::fs::read_dir(&self.directory) {
            Ok(listing) => listing,
            Err(e) => {
                let message = format!("cannot list {}: {e}", self.directory.display());
                self.health.failed(&message);
                return;
            }
        };
        let mut present = HashSet::new();
        for entry in listing.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if namespace_of(&name).is_none() {
                continue;
            }
            // `metadata` follows links: a link to a regular file is a candidate.
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            present.insert(name.clone());
            let stamp = Stamp {
                modified: meta.modified().ok(),
                size: meta.len(),
                inode: meta.ino(),
            };
            self.refresh(&name, &path, stamp);
        }
        self.loaded.retain(|name, _| present.contains(name));
        self.publish_all();
        let unparsable: Vec<&str> = self
            .loaded
            .values()
            .filter_map(|l| l.unparsable.as_deref())
            .collect();
        self.health.set("files", self.loaded.len().into());
        match unparsable.first() {
            Some(first) => {
                let first = first.to_string();
                self.health.failed(&first);
            }
            None => {
                self.health.succeeded(true);
            }
        }
    }

    /// Reads one file again if it changed or has not been read for a while.
    fn refresh(&mut self, name: &str, path: &Path, stamp: Stamp) {
        if let Some(loaded) = self.loaded.get(name) {
            if loaded.stamp == Some(stamp) && loaded.read_at.elapsed() < REREAD_INTERVAL {
                return;
            }
        }
        let changed = self.loaded.get(name).is_none_or(|l| l.stamp != Some(stamp));
        let result = read_bounded(path)
            .map_err(|e| e.to_string())
            .and_then(|text| parse(&text));
        let loaded = self.loaded.entry(name.to_string()).or_insert(Loaded {
            stamp: None,
            read_at: Instant::now(),
            instances: Vec::new(),
            unparsable: None,
        });
        loaded.read_at = Instant::now();
        match result {
            Ok(parsed) => {
                if changed {
                    for (at, why) in &parsed.skipped {
                        crate::warn!(
                            "catalog entry skipped",
                            "source" => "files",
                            "file" => name,
                            "entry" => at,
                            "reason" => why
                        );
                    }
                }
                loaded.stamp = Some(stamp);
                loaded.instances = parsed.instances;
                loaded.unparsable = None;
            }
            Err(why) => {
                // Keep the stamp of the last good read, so the file is tried at every check.
                loaded.stamp = None;
                loaded.unparsable = Some(format!("file {name}: {why}"));
            }
        }
    }

    /// Publishes each namespace's entries: `N.json`'s, then `N.conf`'s, the later of two
    /// entries with one id winning.
    fn publish_all(&mut self) {
        let mut namespaces: BTreeMap<&str, [Option<&Loaded>; 2]> = BTreeMap::new();
        for (name, loaded) in &self.loaded {
            if let Some((namespace, is_json)) = namespace_of(name) {
                namespaces.entry(namespace).or_default()[usize::from(!is_json)] = Some(loaded);
            }
        }
        let mut published = HashSet::new();
        for (namespace, files) in &namespaces {
            let mut order: Vec<Option<Arc<Instance>>> = Vec::new();
            let mut at: HashMap<Arc<str>, usize> = HashMap::new();
            for instance in files.iter().flatten().flat_map(|l| l.instances.iter()) {
                if let Some(earlier) = at.insert(instance.id.clone(), order.len()) {
                    order[earlier] = None;
                }
                order.push(Some(instance.clone()));
            }
            let instances: Vec<Arc<Instance>> = order.into_iter().flatten().collect();
            self.catalogs
                .publish(SourceKind::Files, namespace, instances);
            published.insert(namespace.to_string());
        }
        for gone in self.published.difference(&published) {
            self.catalogs.publish(SourceKind::Files, gone, Vec::new());
        }
        self.published = published;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_in_a_file_place_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("a8r-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("default.json");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // No writer ever opens it: a blocking open would never return.
        let read = read_bounded(&fifo);
        assert!(read.is_err(), "{read:?}");
        std::fs::write(dir.join("team.json"), b"{}").unwrap();
        assert_eq!(read_bounded(&dir.join("team.json")).unwrap(), b"{}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn candidates_are_json_and_conf_files_of_a_visible_name() {
        assert_eq!(namespace_of("default.json"), Some(("default", true)));
        assert_eq!(namespace_of("team-a.conf"), Some(("team-a", false)));
        for name in [
            ".json",
            ".default.json.swp",
            ".hidden.json",
            "x.txt",
            "json",
        ] {
            assert_eq!(namespace_of(name), None, "{name}");
        }
    }

    #[test]
    fn good_entries_map_and_bad_ones_are_skipped_with_their_index() {
        let text = br#"{"instances":[
            {"service_name":"reviews","endpoint":{"type":"http","value":"10.1.0.3:80"},"status":"down","tags":["v1"],"metadata":{"b":1,"a":[2]},"ttl":30},
            {"endpoint":{"type":"tcp","value":"x"}},
            "text",
            {"service_name":"s","endpoint":{"type":"HTTP","value":"x"}},
            {"service_name":"s","endpoint":{"type":"tcp","value":"x"},"tags":[1]},
            {"service_name":"s","endpoint":{"type":"tcp","value":"x"},"status":null,"metadata":null}
        ],"other":true}"#;
        let parsed = parse(text).unwrap();
        let skipped: Vec<usize> = parsed.skipped.iter().map(|(at, _)| *at).collect();
        assert_eq!(skipped, [1, 2, 3, 4]);
        let first = &parsed.instances[0];
        let endpoint = Endpoint {
            kind: EndpointType::Http,
            value: "10.1.0.3:80".into(),
        };
        assert_eq!(*first.id, derive_id("reviews", &endpoint));
        assert_eq!(first.status.as_str(), "down");
        assert_eq!(first.tags, ["v1", "filesystem"]);
        assert_eq!(first.metadata.as_ref().unwrap().get(), r#"{"b":1,"a":[2]}"#);
        assert!(first.ttl.is_zero());
        let last = &parsed.instances[1];
        assert_eq!(last.status.as_str(), "UP");
        assert_eq!(last.metadata.as_ref().unwrap().get(), "null");
    }

    #[test]
    fn unparsable_files_are_told_apart_from_empty_ones() {
        assert!(parse(b"{}").unwrap().instances.is_empty());
        assert!(parse(br#"{"instances":null}"#)
            .unwrap()
            .instances
            .is_empty());
        for bad in [
            &b"[]"[..],
            b"{\"instances\":{}}",
            b"{\"instances\":[]} x",
            b"{\"instances\":[",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!(
            "{{\"instances\":[{{\"metadata\":{}1{}}}]}}",
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(parse(deep.as_bytes()).is_err());
        let shallow = r#"{"instances":[{"metadata":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]}"#;
        assert!(
            parse(shallow.as_bytes()).is_ok(),
            "brackets in strings do not nest"
        );
    }
}
