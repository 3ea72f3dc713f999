//! JSON helpers shared by the protocols: the nesting bound checked before any parser runs, string
//! literals for hand-written bodies, and object readers that run in one pass over the input.
//!
//! The readers keep only what their caller asks for: [`object`] picks the members of a fixed set
//! of names and skips the rest without copying it, so a body of a hundred thousand unknown keys
//! costs one pass and no memory; [`OrderedObject`] keeps members in document order with an index,
//! so duplicate keys are settled in constant time each instead of by a search of all earlier keys.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;

/// Deepest JSON nesting accepted in a request body (spec D15): the top-level value counts as 1.
pub const MAX_JSON_DEPTH: usize = 64;

pub use crate::nesting::{nesting_within, surrogate_escapes_paired};

/// Appends `text` as a JSON string literal.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    // Serialising a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// True when `text` is written as it is inside a JSON string literal: it holds no quote, backslash
/// or control character, which [`write_string`] would escape.
pub fn needs_no_escape(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `text` as a JSON string literal to a `String`.
pub fn push_string(out: &mut String, text: &str) {
    let mut bytes = std::mem::take(out).into_bytes();
    write_string(&mut bytes, text);
    // Valid UTF-8 followed by a JSON literal, which serde_json writes as UTF-8.
    *out = String::from_utf8(bytes).unwrap_or_default();
}

/// A JSON string as text borrowed from the input, or an owned copy when the string has escapes
/// (only then does its text differ from the input's bytes): a decoder that only looks at a string,
/// or copies it into what it keeps, makes no string of its own.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The text could not be read as the JSON the caller asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl From<serde_json::Error> for Malformed {
    fn from(_: serde_json::Error) -> Malformed {
        Malformed
    }
}

/// The members of an object whose names are among `names`, as raw JSON text borrowed from the
/// input; the last of duplicate keys wins, as in the original. Other members are skipped.
pub struct Members<'a> {
    names: &'static [&'static str],
    /// In place rather than on the heap: a registration reads two or more objects.
    values: [Option<&'a RawValue>; MAX_MEMBERS],
}

/// Most names one [`object`] call may pick (a Eureka instance has 22).
pub const MAX_MEMBERS: usize = 24;

impl<'a> Members<'a> {
    /// No members (a JSON `null`, or an absent object).
    ///
    /// # Panics
    ///
    /// When `names` has more than [`MAX_MEMBERS`] names (a fixed list of the caller's).
    pub fn empty(names: &'static [&'static str]) -> Members<'a> {
        assert!(names.len() <= MAX_MEMBERS, "too many member names");
        Members {
            names,
            values: [None; MAX_MEMBERS],
        }
    }

    /// The raw value of `name`, if the object has it. `name` must be one of the names asked for.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        let slot = self.names.iter().position(|n| *n == name)?;
        self.values[slot]
    }

    /// The member `name` decoded as `T`; absence and `null` are `None`, a type mismatch is an
    /// error.
    pub fn field<T: serde::Deserialize<'a>>(&self, name: &str) -> Result<Option<T>, Malformed> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => Ok(serde_json::from_slice::<Option<T>>(raw.get().as_bytes())?),
        }
    }
}

/// Reads `json` as one object and keeps the members named in `names`: `Ok(None)` for `null`, an
/// error for anything else that is not an object (trailing text included). One pass, whatever the
/// number of members.
pub fn object<'a>(
    json: &'a str,
    names: &'static [&'static str],
) -> Result<Option<Members<'a>>, Malformed> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let members = PickObject { names }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(members)
}

struct PickObject {
    names: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for PickObject {
    type Value = Option<Members<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for PickObject {
    type Value = Option<Members<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(PickMembers { names: self.names })
    }
}

struct PickMembers {
    names: &'static [&'static str],
}

impl<'de> Visitor<'de> for PickMembers {
    type Value = Option<Members<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Members::empty(self.names);
        while let Some(slot) = map.next_key_seed(NameSlot { names: self.names })? {
            match slot {
                Some(slot) => members.values[slot] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(members))
    }
}

/// A member name, read without copying it: its position among the wanted names, if any.
struct NameSlot {
    names: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for NameSlot {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSlot {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|n| *n == name))
    }
}

/// The only element of a one-element array; any other length is an error. Stops at the second
/// element, so a long array costs no memory.
pub fn single_element(json: &str) -> Result<&RawValue, Malformed> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let only = deserializer.deserialize_seq(SingleElement)?;
    deserializer.end()?;
    only.ok_or(Malformed)
}

struct SingleElement;

impl<'de> Visitor<'de> for SingleElement {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of one element")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Some(first) = seq.next_element::<&'de RawValue>()? else {
            return Ok(None);
        };
        match seq.next_element::<IgnoredAny>()? {
            None => Ok(Some(first)),
            Some(_) => Err(serde::de::Error::invalid_length(2, &self)),
        }
    }
}

/// Members in document order, indexed by name: inserting an existing name replaces its value in
/// the place of its first appearance (the last of duplicate keys wins), in constant time.
#[derive(Clone, Debug)]
pub struct OrderedObject<V> {
    entries: Vec<(String, V)>,
    index: HashMap<String, usize>,
}

impl<V> Default for OrderedObject<V> {
    fn default() -> Self {
        OrderedObject {
            entries: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<V> OrderedObject<V> {
    /// Sets `name` to `value`; returns the value it replaces.
    pub fn insert(&mut self, name: &str, value: V) -> Option<V> {
        match self.index.get(name) {
            Some(&slot) => Some(std::mem::replace(&mut self.entries[slot].1, value)),
            None => {
                self.index.insert(name.to_string(), self.entries.len());
                self.entries.push((name.to_string(), value));
                None
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&V> {
        self.index.get(name).map(|&slot| &self.entries[slot].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The members in document order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }
}

impl<V> OrderedObject<V> {
    /// The compact JSON text of the object, each value written by `write_value`.
    pub fn to_json_with(&self, write_value: impl Fn(&mut Vec<u8>, &V)) -> String {
        let mut out = Vec::with_capacity(2 + self.entries.len() * 16);
        out.push(b'{');
        for (i, (name, value)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(&mut out, name);
            out.push(b':');
            write_value(&mut out, value);
        }
        out.push(b'}');
        // Names are written by serde_json and values by the caller, from `str`s: it is UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }
}

impl<V: AsRef<str>> OrderedObject<V> {
    /// The compact JSON text of the object, each value being raw JSON text.
    pub fn to_json(&self) -> String {
        self.to_json_with(|out, value| out.extend_from_slice(value.as_ref().as_bytes()))
    }
}

/// The members of a JSON object text in document order, values as raw JSON text borrowed from
/// it (the last of duplicate keys wins); `None` when the text is not an object.
pub fn ordered_members(json: &str) -> Option<OrderedObject<&str>> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let members = deserializer.deserialize_map(CollectMembers).ok()?;
    deserializer.end().ok()?;
    Some(members)
}

struct CollectMembers;

impl<'de> Visitor<'de> for CollectMembers {
    type Value = OrderedObject<&'de str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = OrderedObject::default();
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value = map.next_value::<&'de RawValue>()?;
            members.insert(&name, value.get());
        }
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["a", "b"];

    #[test]
    fn nesting_limit_counts_brackets_outside_strings() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(nesting_within(nested(64).as_bytes(), 64));
        assert!(!nesting_within(nested(65).as_bytes(), 64));
        assert!(nesting_within(br#"{"a":"[[[[[[[[[[\"[[["}"#, 2));
    }

    #[test]
    fn object_picks_named_members_and_the_last_duplicate() {
        let members = object(r#"{"a":1,"x":{"deep":[1,2]},"b":"t","a":[2]}"#, NAMES)
            .unwrap()
            .unwrap();
        assert_eq!(members.get("a").unwrap().get(), "[2]");
        assert_eq!(members.field::<String>("b").unwrap().as_deref(), Some("t"));
        assert!(members.field::<u32>("b").is_err(), "type mismatch");
        assert!(object("null", NAMES).unwrap().is_none());
        let escaped = object(r#"{"\u0061":5}"#, NAMES).unwrap().unwrap();
        assert_eq!(escaped.field::<u32>("a").unwrap(), Some(5));
        for bad in ["", "[]", "1", r#"{"a":1} x"#, r#"{"a":"#, r#"{"A":1,}"#] {
            assert!(object(bad, NAMES).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_reads_many_members_in_one_pass() {
        let mut body = String::from("{");
        for i in 0..200_000 {
            body.push_str(&format!("\"k{i}\":{i},"));
        }
        body.push_str("\"a\":true}");
        let members = object(&body, NAMES).unwrap().unwrap();
        assert_eq!(members.field::<bool>("a").unwrap(), Some(true));
    }

    #[test]
    fn single_element_arrays_only() {
        assert_eq!(single_element("[{\"a\":1}]").unwrap().get(), "{\"a\":1}");
        for bad in ["[]", "[1,2]", "{}", "[1] x", "[1,"] {
            assert!(single_element(bad).is_err(), "{bad}");
        }
        let long = format!("[{}1]", "1,".repeat(500_000));
        assert!(single_element(&long).is_err());
    }

    #[test]
    fn ordered_members_keep_document_order_and_the_last_value() {
        let members = ordered_members(r#"{"z":1,"a":{"n":2},"z":3}"#).unwrap();
        let seen: Vec<(&str, &str)> = members.iter().map(|(k, v)| (k, *v)).collect();
        assert_eq!(seen, [("z", "3"), ("a", "{\"n\":2}")]);
        assert_eq!(members.to_json(), r#"{"z":3,"a":{"n":2}}"#);
        assert!(ordered_members("[1]").is_none());
        assert!(ordered_members("{} x").is_none());
        let mut many = String::from("{");
        for i in 0..100_000 {
            many.push_str(&format!("\"k{i}\":0,\"k{i}\":1,"));
        }
        many.push_str("\"end\":2}");
        let members = ordered_members(&many).unwrap();
        assert_eq!(members.len(), 100_001);
        assert_eq!(members.get("k7"), Some(&"1"));
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = String::from("x");
        push_string(&mut out, "a\"\n<");
        assert_eq!(out, "x\"a\\\"\\n<\"");
    }
}
