//! The key layout (spec §5). Every key starts with [`PREFIX`], which names this layout and its
//! version; the original registry's `reg:ns:…` keys are never touched.
//!
//! A namespace's keys all start with `a8r1:{<hex>}` where `<hex>` is the namespace's bytes in
//! lowercase hexadecimal: the braces make it the Redis Cluster hash tag, so every key of one
//! namespace lives in one slot and one script updates them atomically, and hex holds neither
//! braces nor `:`, so no namespace's prefix is another's (`a`, `a:inst:b`, `a*` and `{a}` are
//! `{61}`, `{613a696e73743a62}`, `{612a}` and `{7b617d}`). Service names, statuses and index
//! values inside key names are hex-encoded the same way; ids are only ever hash fields or set
//! members, which are binary-safe.
//!
//! | key (after the namespace prefix) | type | holds |
//! |---|---|---|
//! | `:i` | hash | id → `<hex service> <hex status> <ttl ms>\n<record JSON>` |
//! | `:k` | hash | id → the index keys (suffixes) the id is a member of |
//! | `:d` | sorted set | id → deadline in Redis milliseconds (OUT_OF_SERVICE ids absent) |
//! | `:n` | hash | hex service → live instances (the service list) |
//! | `:st` | hash | hex status → live instances (the Eureka hash code) |
//! | `:s:<hex service>` | set | ids of the service |
//! | `:vip:<hex vip>`, `:svip:<hex vip>` | set | ids with that Eureka VIP / secure VIP address |
//! | `:x:<hex suffix>` | set | ids with that `:`-suffix (Eureka's lookup by instance id) |
//! | `:xd` | set | ids with more than [`MAX_INDEXED_SUFFIXES`] suffixes, checked one by one |
//! | `:v` | string | `versions__delta`, expires 24 h after the namespace's last change |
//! | `:ix` | string | the change index (`X-A8-Index`): never below Redis's clock in µs; 24 h |
//! | `:f` | string | present (24 h) while Eureka calls touch the namespace: its changes are logged |
//! | `:lt`, `:lr` | sorted set, hash | the change log: id → time, id → kind and last value; 3 min |
//! | `:m` | never written | the migration guard ([`MIGRATION_GUARD`]) |
//!
//! Deployment-wide there are two more keys: [`LIVE_NAMESPACES`], the set of hex namespaces that
//! hold instances (for metrics), and [`DUE_NAMESPACES`], hex namespace → its earliest deadline,
//! the reapers' schedule: a reaper visits only the namespaces whose earliest deadline passed, so
//! idle namespaces cost nothing. A namespace leaves both once it holds nothing. Every index loses
//! an id in the same script that removes its record, and Redis deletes a hash, set or sorted set
//! that empties, so once a namespace holds nothing only `:v`, `:ix` and the change log remain,
//! each with an expiry.
//!
//! The two deployment-wide keys live in another slot than the namespace's keys, so they are
//! written by separate commands after a script, in an order that cannot lose a namespace: a
//! reaper that takes a namespace out (or raises its due time) reads the namespace again
//! afterwards and puts it back if a registration slipped in; a registration lowers the due time
//! (`ZADD LT`) after its own script.
//!
//! Nothing is ever found with `SCAN` or `KEYS`: a service is read through its own set, the
//! namespace through `:i`, the reaper through `:d` of the namespaces due in [`DUE_NAMESPACES`].

/// The suffix of the namespace's records hash: the script's `KEYS[1]`, the key Redis Cluster
/// judges redirections by, present whenever the namespace holds instances.
pub const RECORDS: &str = ":i";
/// The suffix of the namespace's deadlines (id → Redis ms), read without the script for metrics.
pub const DEADLINES: &str = ":d";
/// The suffix of the script's `KEYS[2]`, a key of the namespace's slot that is never written.
/// Declaring it makes Redis Cluster refuse the script while the slot migrates (the source node
/// misses a declared key, so it redirects with `ASK`, and the importing node misses one of
/// several declared keys, so it answers `TRYAGAIN`): a script never runs on half of a
/// namespace's keys. The caller tries again until the migration ends.
pub const MIGRATION_GUARD: &str = ":m";
/// The prefix of every key: the layout's name and version.
pub const PREFIX: &str = "a8r1:";
/// The set of (hex) namespaces holding instances.
pub const LIVE_NAMESPACES: &str = "a8r1:live";
/// Hex namespace → the earliest deadline (Redis ms) among its instances.
pub const DUE_NAMESPACES: &str = "a8r1:due";
/// The channel every script publishes its changes on.
pub const CHANGES_CHANNEL: &str = "a8r1:changes";
/// Most `:`-suffixes of one id that get an index set each (as the in-memory store).
pub const MAX_INDEXED_SUFFIXES: usize = 16;

/// Lowercase hexadecimal of the bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// The bytes of lowercase (or uppercase) hexadecimal; `None` for anything else.
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The prefix of every key of `namespace` (the script's keys are it plus [`RECORDS`] and
/// [`MIGRATION_GUARD`]).
pub fn namespace_key(namespace: &str) -> String {
    namespace_key_of_hex(&hex(namespace.as_bytes()))
}

/// The same, from the namespace already in hex.
pub fn namespace_key_of_hex(hex_namespace: &str) -> String {
    format!("{PREFIX}{{{hex_namespace}}}")
}

pub fn service_index(service: &str) -> String {
    format!("s:{}", hex(service.as_bytes()))
}

pub fn vip_index(vip: &str) -> String {
    format!("vip:{}", hex(vip.as_bytes()))
}

pub fn secure_vip_index(vip: &str) -> String {
    format!("svip:{}", hex(vip.as_bytes()))
}

pub fn suffix_index(suffix: &str) -> String {
    format!("x:{}", hex(suffix.as_bytes()))
}

/// The set of ids with too many suffixes to index each.
pub const DEEP_SUFFIXES: &str = "xd";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_never_share_a_prefix() {
        let names = ["a", "a:inst:b", "a*", "{a}", "a}", "", "a b", "é"];
        let keys: Vec<String> = names.iter().map(|n| namespace_key(n)).collect();
        for (i, a) in keys.iter().enumerate() {
            for (j, b) in keys.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(&format!("{a}:")), "{a} vs {b}");
                    assert_ne!(a, b);
                }
            }
        }
        assert_eq!(namespace_key("{a}"), "a8r1:{7b617d}");
        assert_eq!(unhex(hex(b"a:\xff").as_bytes()).unwrap(), b"a:\xff");
        assert_eq!(unhex(b"zz"), None);
        assert_eq!(unhex(b"abc"), None);
    }
}
