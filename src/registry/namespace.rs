//! The name of a tenant's catalog, validated once, where authentication produces it.
//!
//! A namespace reaches the registry from outside: a trusted token taken verbatim, the `namespace`
//! claim of a JWT, or a percent-decoded Eureka path segment. Without a check, a client could name
//! a namespace with a NUL byte, line breaks that forge log lines, or megabytes of text kept as a
//! map key. [`Namespace::new`] is the one place that decides what a name may be; every other
//! layer takes a [`Namespace`] and can rely on it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

/// Longest namespace name accepted, in bytes of UTF-8.
pub const MAX_NAMESPACE_BYTES: usize = 256;

/// The namespace of single-tenant mode (spec 2.2 a).
pub const DEFAULT_NAMESPACE: &str = "default";

/// A valid namespace name: non-empty, at most [`MAX_NAMESPACE_BYTES`] bytes, and free of control
/// characters (Unicode category Cc: U+0000..U+001F and U+007F..U+009F, so no NUL, tab, line break
/// or escape). Anything else (`a/b`, `..`, `*`, spaces, any script) is a name like any other: a
/// namespace is a map key, never a file path or a log fragment.
///
/// Cloning is cheap (a shared `Arc<str>`). It reads as a `&str` through [`Namespace::as_str`],
/// `Deref` and `Borrow<str>` (so a `HashMap<Namespace, _>` can be looked up by `&str`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

/// Why a name is not a [`Namespace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidNamespace {
    Empty,
    /// Longer than [`MAX_NAMESPACE_BYTES`].
    TooLong,
    /// Holds a control character.
    ControlCharacter,
}

impl fmt::Display for InvalidNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidNamespace::Empty => f.write_str("a namespace must not be empty"),
            InvalidNamespace::TooLong => {
                write!(f, "a namespace is at most {MAX_NAMESPACE_BYTES} bytes long")
            }
            InvalidNamespace::ControlCharacter => {
                f.write_str("a namespace must not hold control characters")
            }
        }
    }
}

impl std::error::Error for InvalidNamespace {}

impl Namespace {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidNamespace`] when `name` is empty, longer than [`MAX_NAMESPACE_BYTES`] or holds a
    /// control character.
    pub fn new(name: &str) -> Result<Namespace, InvalidNamespace> {
        if name.is_empty() {
            return Err(InvalidNamespace::Empty);
        }
        if name.len() > MAX_NAMESPACE_BYTES {
            return Err(InvalidNamespace::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidNamespace::ControlCharacter);
        }
        Ok(Namespace(Arc::from(name)))
    }

    /// The namespace `default`, shared: single-tenant requests allocate nothing for it.
    pub fn default_namespace() -> Namespace {
        static DEFAULT: OnceLock<Namespace> = OnceLock::new();
        DEFAULT
            .get_or_init(|| Namespace(Arc::from(DEFAULT_NAMESPACE)))
            .clone()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared name, for stores that key their maps by `Arc<str>`.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl Deref for Namespace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Namespace {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Namespace {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Namespace {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Namespace {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<&str> for Namespace {
    type Error = InvalidNamespace;

    fn try_from(name: &str) -> Result<Namespace, InvalidNamespace> {
        Namespace::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_of_any_script_are_valid() {
        for name in [
            "default", "a", "team-a", "a/b", "..", "*", "tenant A", " lead", "名前", "\u{200b}",
            "x\u{301}",
        ] {
            assert_eq!(Namespace::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn empty_names_are_invalid() {
        assert_eq!(Namespace::new(""), Err(InvalidNamespace::Empty));
    }

    #[test]
    fn the_length_bound_is_in_bytes() {
        assert!(Namespace::new(&"a".repeat(MAX_NAMESPACE_BYTES)).is_ok());
        assert_eq!(
            Namespace::new(&"a".repeat(MAX_NAMESPACE_BYTES + 1)),
            Err(InvalidNamespace::TooLong)
        );
        // 128 two-byte characters fill the bound; one more byte passes it.
        let two_byte = "é".repeat(MAX_NAMESPACE_BYTES / 2);
        assert!(Namespace::new(&two_byte).is_ok());
        assert_eq!(
            Namespace::new(&format!("{two_byte}a")),
            Err(InvalidNamespace::TooLong)
        );
    }

    #[test]
    fn control_characters_are_invalid_anywhere() {
        for name in [
            "../x\0y", "\0", "a\tb", "a\nb", "a\r", "\x1b[31m", "a\x7f", "a\u{85}", "a\u{9f}",
        ] {
            assert_eq!(
                Namespace::new(name),
                Err(InvalidNamespace::ControlCharacter),
                "{name:?}"
            );
        }
    }

    #[test]
    fn reads_as_a_str() {
        let namespace = Namespace::new("ns1").unwrap();
        let as_str: &str = &namespace;
        assert_eq!(as_str, "ns1");
        assert_eq!(namespace.to_string(), "ns1");
        assert_eq!(format!("{namespace:?}"), "\"ns1\"");
        let mut map = std::collections::HashMap::new();
        map.insert(namespace.clone(), 1);
        assert_eq!(map.get("ns1"), Some(&1));
        assert_eq!(Namespace::default_namespace().as_str(), DEFAULT_NAMESPACE);
    }
}
