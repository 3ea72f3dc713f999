//! The cluster directory (contract §3.1): the own member file, written atomically every
//! [`REWRITE_INTERVAL`], and the others' files, alive while the reader has seen them change
//! within [`FILE_ALIVE_FOR`] by its own monotonic clock (never the writer's: W12).

use super::address::HostPort;
use super::codec::{member_text, parse_member};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The own file is rewritten this often.
pub const REWRITE_INTERVAL: Duration = Duration::from_secs(7);
/// The directory is read this often.
pub const READ_INTERVAL: Duration = Duration::from_secs(2);
/// A file counts while it changed within this long, by the reader's clock.
pub const FILE_ALIVE_FOR: Duration = Duration::from_secs(30);

/// What a reader remembers of one member file.
struct Seen {
    content: Vec<u8>,
    modified: Option<SystemTime>,
    inode: u64,
    changed_at: Instant,
    address: Option<String>,
}

/// The directory as this node sees it.
pub struct Directory {
    path: PathBuf,
    own_id: u64,
    own_address: String,
    started: String,
    seq: u64,
    last_write: Option<Instant>,
    seen: HashMap<u64, Seen>,
}

impl Directory {
    /// Creates the directory (with its parents, mode 0755) if needed; fails with a line naming
    /// the path.
    pub fn open(
        path: &Path,
        own_id: u64,
        own_address: &str,
        started: String,
    ) -> Result<Directory, String> {
        use std::os::unix::fs::DirBuilderExt;
        if !path.is_dir() {
            if path.exists() {
                return Err(format!(
                    "--cluster_dir {}: exists and is not a directory",
                    path.display()
                ));
            }
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|e| format!("cannot create --cluster_dir {}: {e}", path.display()))?;
        }
        Ok(Directory {
            path: path.to_path_buf(),
            own_id,
            own_address: own_address.to_string(),
            started,
            seq: 0,
            last_write: None,
            seen: HashMap::new(),
        })
    }

    fn own_path(&self) -> PathBuf {
        self.path.join(member_text(self.own_id))
    }

    /// Writes the own file (atomically: a dot-file renamed over it) if it is due or `now`.
    pub fn write_own(&mut self, force: bool) -> Result<(), String> {
        if !force
            && self
                .last_write
                .is_some_and(|at| at.elapsed() < REWRITE_INTERVAL)
        {
            return Ok(());
        }
        self.seq += 1;
        let line = serde_json::json!({
            "id": member_text(self.own_id),
            "address": self.own_address,
            "started": self.started,
            "seq": self.seq,
        })
        .to_string()
            + "\n";
        let temporary = self.path.join(format!(".{}.tmp", member_text(self.own_id)));
        let own = self.own_path();
        std::fs::write(&temporary, line)
            .and_then(|()| std::fs::rename(&temporary, &own))
            .map_err(|e| format!("cannot write the member file {}: {e}", own.display()))?;
        self.last_write = Some(Instant::now());
        Ok(())
    }

    /// Removes the own file (graceful leave).
    pub fn remove_own(&self) {
        let _ = std::fs::remove_file(self.own_path());
    }

    /// Reads the directory and updates what was seen; files named otherwise are ignored, and bad
    /// contents are logged once per change.
    pub fn read(&mut self) {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return;
        };
        let now = Instant::now();
        let mut present = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(parse_member) else {
                continue;
            };
            if id == self.own_id {
                continue;
            }
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            // A member file is one short line; anything large is not one.
            if metadata.len() > 4096 {
                continue;
            }
            let Ok(content) = std::fs::read(entry.path()) else {
                continue;
            };
            present.push(id);
            let modified = metadata.modified().ok();
            let inode = metadata.ino();
            let changed = match self.seen.get(&id) {
                Some(seen) => {
                    seen.content != content || seen.modified != modified || seen.inode != inode
                }
                None => true,
            };
            if changed {
                let address = parse_file(id, &content);
                if address.is_none() {
                    crate::warn!("ignoring a member file", "path" => entry.path().display());
                }
                self.seen.insert(
                    id,
                    Seen {
                        content,
                        modified,
                        inode,
                        changed_at: now,
                        address,
                    },
                );
            }
        }
        self.seen.retain(|id, _| present.contains(id));
    }

    /// Members whose files are alive, with their addresses.
    pub fn alive(&self) -> Vec<(u64, String)> {
        self.seen
            .iter()
            .filter(|(_, seen)| seen.changed_at.elapsed() < FILE_ALIVE_FOR)
            .filter_map(|(id, seen)| Some((*id, seen.address.clone()?)))
            .collect()
    }
}

/// The address of a member file's content, if it is one JSON object whose `id` is the file name
/// and whose `address` is valid.
fn parse_file(id: u64, content: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(content).ok()?;
    let object = value.as_object()?;
    if object.get("id")?.as_str()? != member_text(id) {
        return None;
    }
    let address = object.get("address")?.as_str()?;
    HostPort::parse(address).ok().map(|h| h.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_must_name_their_own_id_and_a_valid_address() {
        let id = 0x1f0c_6e2a_9b3d_4c57;
        let good =
            br#"{"id":"1f0c6e2a9b3d4c57","address":"[::1]:6100","started":"x","seq":1,"more":2}"#;
        assert_eq!(parse_file(id, good).as_deref(), Some("[::1]:6100"));
        for bad in [
            &br#"{"id":"1f0c6e2a9b3d4c58","address":"10.0.0.1:1"}"#[..],
            br#"{"id":"1f0c6e2a9b3d4c57","address":"::1:6100"}"#,
            br#"{"id":"1f0c6e2a9b3d4c57"}"#,
            b"not json",
            br#"["1f0c6e2a9b3d4c57"]"#,
        ] {
            assert_eq!(parse_file(id, bad), None);
        }
    }

    #[test]
    fn liveness_follows_changes_seen_by_the_reader_not_the_writer_clock() {
        let base = std::env::temp_dir().join(format!("a8-membership-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mut writer =
            Directory::open(&base, 1, "127.0.0.1:1", "2001-01-01T00:00:00Z".into()).unwrap();
        writer.write_own(true).unwrap();
        // A far-past modification time says nothing: the reader saw the file appear just now.
        let file = base.join(member_text(1));
        let past = std::fs::File::options().write(true).open(&file).unwrap();
        past.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        std::fs::write(base.join("10.0.0.1:6100"), "old style").unwrap();
        let mut reader = Directory::open(&base, 2, "127.0.0.1:2", String::new()).unwrap();
        reader.read();
        assert_eq!(reader.alive(), vec![(1, "127.0.0.1:1".to_string())]);
        let _ = std::fs::remove_dir_all(&base);
    }
}
