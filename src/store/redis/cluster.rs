//! Redis Cluster routing for the connection layer: the slot map, read from `CLUSTER SLOTS` of a
//! seed node, sends each command to the master of its key's slot over a plain connection per
//! node, and follows `MOVED` (the map is read again) and `ASK` (one `ASKING` redirect), so slot
//! migrations and master failovers are followed without a restart.

use super::link::{describe_error, exchange, open_node, Broken, Packed, Reply};
use super::resp::{Connection, Value};
use std::collections::HashMap;

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16384;

/// The slot of a key: CRC16 (XMODEM) of its hash tag (the text between the first `{` and the
/// next `}`, when not empty), else of the whole key, modulo 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

type Node = (String, u16);

/// Connections to the masters of one cluster, and who serves which slots.
pub struct ClusterConn {
    /// (first slot, last slot, master), sorted.
    slots: Vec<(u16, u16, Node)>,
    nodes: HashMap<Node, Connection>,
    user: Option<String>,
    password: Option<String>,
}

/// Reads `CLUSTER SLOTS` from `connection` (of the node at `asked`).
fn slot_map(connection: &mut Connection, asked: &Node) -> Result<Vec<(u16, u16, Node)>, String> {
    let reply = connection
        .call(&[b"CLUSTER", b"SLOTS"])
        .map_err(|e| describe_error(&e))?;
    let Reply::Value(Value::Array(ranges)) = reply else {
        return Err("CLUSTER SLOTS answered something unexpected".into());
    };
    let mut slots = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(h)) if !h.is_empty() => String::from_utf8_lossy(h).into_owned(),
            _ => asked.0.clone(),
        };
        let Some(Value::Int(port)) = master.get(1) else {
            continue;
        };
        slots.push((*first as u16, *last as u16, (host, *port as u16)));
    }
    if slots.is_empty() {
        return Err("the cluster serves no slots".into());
    }
    slots.sort();
    Ok(slots)
}

impl ClusterConn {
    /// The slot map from the first seed that answers.
    pub fn connect(
        seeds: &[Node],
        user: Option<String>,
        password: Option<String>,
    ) -> Result<ClusterConn, String> {
        let mut last = String::from("no seed node answered");
        for seed in seeds {
            let opened = open_node(seed, user.as_deref(), password.as_deref());
            let mut connection = match opened {
                Ok(connection) => connection,
                Err(e) => {
                    last = format!("{}:{}: {e}", seed.0, seed.1);
                    continue;
                }
            };
            match slot_map(&mut connection, seed) {
                Ok(slots) => {
                    let mut nodes = HashMap::new();
                    nodes.insert(seed.clone(), connection);
                    return Ok(ClusterConn {
                        slots,
                        nodes,
                        user,
                        password,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn owner(&self, key: Option<&[u8]>) -> Node {
        let Some(key) = key else {
            return self.slots[0].2.clone();
        };
        let slot = slot(key);
        self.slots
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .map_or_else(|| self.slots[0].2.clone(), |(_, _, node)| node.clone())
    }

    fn node(&mut self, node: &Node) -> Result<&mut Connection, Broken> {
        if !self.nodes.contains_key(node) {
            let connection =
                open_node(node, self.user.as_deref(), self.password.as_deref()).map_err(Broken)?;
            self.nodes.insert(node.clone(), connection);
        }
        self.nodes
            .get_mut(node)
            .ok_or_else(|| Broken("lost a node connection".into()))
    }

    fn send(&mut self, node: &Node, commands: &[&Packed]) -> Result<Vec<Reply>, Broken> {
        let connection = self.node(node)?;
        let replies = exchange(connection, commands);
        if replies.is_err() {
            self.nodes.remove(node);
        }
        replies
    }

    /// Runs each command on the master of its key (`None`: any node), following redirects once.
    pub fn run(&mut self, commands: &[(Option<Vec<u8>>, Packed)]) -> Result<Vec<Reply>, Broken> {
        let mut replies = Vec::with_capacity(commands.len());
        for (key, command) in commands {
            let node = self.owner(key.as_deref());
            let mut reply = self.send(&node, &[command])?.pop();
            if let Some(Reply::Error { code, detail }) = &reply {
                let target = detail
                    .split_whitespace()
                    .nth(1)
                    .and_then(|t| t.rsplit_once(':'))
                    .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)));
                match (code.as_str(), target) {
                    ("MOVED", Some(target)) => {
                        if let Ok(connection) = self.node(&target) {
                            if let Ok(slots) = slot_map(connection, &target) {
                                self.slots = slots;
                            }
                        }
                        reply = self.send(&target, &[command])?.pop();
                    }
                    ("ASK", Some(target)) => {
                        let asking: Packed = vec![b"ASKING".to_vec()];
                        reply = self.send(&target, &[&asking, command])?.pop();
                    }
                    _ => {}
                }
            }
            replies.push(reply.ok_or_else(|| Broken("no reply".into()))?);
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's examples.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            crc16(b"foo{}{bar}") % SLOTS,
            "an empty tag: the key"
        );
        assert_ne!(slot(b"a8r1:{61}:i"), slot(b"a8r1:{62}:i"));
        assert_eq!(slot(b"a8r1:{61}:i"), slot(b"a8r1:{61}:s:77"));
    }
}
