//! RESP2, the Redis wire protocol, over a blocking `TcpStream` with timeouts: commands out, one
//! reply value in. Used only on plain threads. Kept here rather than taken from the `redis`
//! crate, whose connection and parser cost the static binary about 490 KB for the few commands
//! this store sends.
//!
//! Replies are outside input: every length is checked against a bound before anything is
//! allocated for it, nesting is bounded, and anything that is not RESP is an error, never a
//! panic.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest bulk string accepted in a reply (a record is a few KB; a namespace's listing is made
/// of many of them).
const MAX_BULK_BYTES: usize = 64 * 1024 * 1024;
/// Most elements of one array in a reply.
const MAX_ARRAY_ITEMS: usize = 8 * 1024 * 1024;
/// Deepest nesting of arrays in a reply (the store's replies nest three deep).
const MAX_DEPTH: usize = 16;
/// Longest status, error or number line.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// One reply value (errors are [`Reply::Error`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Nil,
    Int(i64),
    BulkString(Vec<u8>),
    SimpleString(String),
    Array(Vec<Value>),
}

/// A reply: a value, or the error Redis gave instead (`code` is its first word).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Value(Value),
    Error { code: String, detail: String },
}

/// Appends one command (an array of bulk strings).
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a Redis reply: {why}"),
    )
}

fn line<R: BufRead>(reader: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("a line without its end"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn number(text: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| invalid("a length or number"))
}

/// Reads one reply.
pub fn read_reply<R: BufRead>(reader: &mut R) -> io::Result<Reply> {
    read_at(reader, 0)
}

fn read_at<R: BufRead>(reader: &mut R, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(invalid("nested too deep"));
    }
    let head = line(reader)?;
    let (kind, rest) = head.split_first().ok_or_else(|| invalid("an empty line"))?;
    let value = match kind {
        b'+' => Value::SimpleString(String::from_utf8_lossy(rest).into_owned()),
        b'-' => {
            let text = String::from_utf8_lossy(rest);
            let (code, detail) = text.split_once(' ').unwrap_or((&text, ""));
            return Ok(Reply::Error {
                code: code.to_string(),
                detail: detail.to_string(),
            });
        }
        b':' => Value::Int(number(rest)?),
        b'$' => {
            let length = number(rest)?;
            if length < 0 {
                Value::Nil
            } else {
                let length = length as usize;
                if length > MAX_BULK_BYTES {
                    return Err(invalid("a bulk string over the bound"));
                }
                let mut bulk = vec![0; length + 2];
                reader.read_exact(&mut bulk)?;
                if !bulk.ends_with(b"\r\n") {
                    return Err(invalid("a bulk string without its end"));
                }
                bulk.truncate(length);
                Value::BulkString(bulk)
            }
        }
        b'*' => {
            let count = number(rest)?;
            if count < 0 {
                Value::Nil
            } else {
                let count = count as usize;
                if count > MAX_ARRAY_ITEMS {
                    return Err(invalid("an array over the bound"));
                }
                // Grown as items arrive: a declared count reserves little.
                let mut items = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    match read_at(reader, depth + 1)? {
                        Reply::Value(v) => items.push(v),
                        // An error inside an array (a script's table) counts as the whole reply.
                        error => return Ok(error),
                    }
                }
                Value::Array(items)
            }
        }
        _ => return Err(invalid("an unknown type")),
    };
    Ok(Reply::Value(value))
}

/// One blocking connection with read and write timeouts.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

/// True for the error a read or write gets when its timeout passed.
pub fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Connection {
    /// Connects to `host:port` (a name is resolved now) within `connect_timeout` per address.
    pub fn connect(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<Connection> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name resolves to nothing");
        for address in (host, port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&address, connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(io_timeout))?;
                    stream.set_write_timeout(Some(io_timeout))?;
                    return Ok(Connection {
                        reader: BufReader::with_capacity(64 * 1024, stream),
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Writes already encoded commands.
    pub fn send(&mut self, packed: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(packed)
    }

    /// Reads the next reply.
    pub fn receive(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut packed = Vec::new();
        encode(args, &mut packed);
        self.send(&packed)?;
        self.receive()
    }

    /// Sets the read timeout (the change subscriber waits longer than a request).
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut &bytes[..])
    }

    #[test]
    fn replies_of_every_type() {
        let value = parse(b"*4\r\n$3\r\nabc\r\n:-7\r\n$-1\r\n*1\r\n+OK\r\n").unwrap();
        assert_eq!(
            value,
            Reply::Value(Value::Array(vec![
                Value::BulkString(b"abc".to_vec()),
                Value::Int(-7),
                Value::Nil,
                Value::Array(vec![Value::SimpleString("OK".into())]),
            ]))
        );
        assert_eq!(
            parse(b"-NOSCRIPT No matching script\r\n").unwrap(),
            Reply::Error {
                code: "NOSCRIPT".into(),
                detail: "No matching script".into()
            }
        );
        let mut out = Vec::new();
        encode(&[b"GET", b"k\r\n"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n");
    }

    #[test]
    fn malformed_replies_are_errors_never_panics() {
        let deep = "*1\r\n".repeat(100);
        for bad in [
            &b""[..],
            b"$5\r\nab\r\n",
            b"$999999999999\r\n",
            b"*99999999999\r\n",
            b":x\r\n",
            b"?\r\n",
            b"\r\n",
            b"+OK",
            b"$2\r\nabcd",
            deep.as_bytes(),
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut rng = crate::testing::Rng::new(5);
        let sample = b"*3\r\n$3\r\nabc\r\n:12\r\n*2\r\n+OK\r\n$-1\r\n";
        for _ in 0..20_000 {
            let _ = parse(&rng.mutate(sample));
        }
    }
}
