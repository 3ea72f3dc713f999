//! The namespaces that tokens have named, kept so that a tenant's requests share one
//! [`Namespace`] instead of allocating it anew for every request.

use crate::registry::keyed_hash::KeyedSet;
use crate::registry::namespace::{InvalidNamespace, Namespace};
use std::sync::Mutex;

/// Most namespaces kept. Beyond it a name is still served, allocated per request: a client that
/// sends ever new tokens cannot make the set grow without bound.
const MAX_INTERNED: usize = 4096;

#[derive(Default)]
pub struct Interned {
    names: Mutex<KeyedSet<Namespace>>,
}

impl Interned {
    /// The namespace `name`, shared with earlier requests that named it.
    ///
    /// # Errors
    ///
    /// As [`Namespace::new`].
    pub fn namespace(&self, name: &str) -> Result<Namespace, InvalidNamespace> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = names.get(name) {
            return Ok(known.clone());
        }
        let namespace = Namespace::new(name)?;
        if names.len() < MAX_INTERNED {
            names.insert(namespace.clone());
        }
        Ok(namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_shared_and_invalid_names_are_refused() {
        let interned = Interned::default();
        let first = interned.namespace("tenant").unwrap();
        let second = interned.namespace("tenant").unwrap();
        assert_eq!(first, second);
        assert!(std::ptr::eq(first.as_str(), second.as_str()));
        assert_eq!(interned.namespace(""), Err(InvalidNamespace::Empty));
        assert_eq!(
            interned.namespace("a\u{7}"),
            Err(InvalidNamespace::ControlCharacter)
        );
    }

    #[test]
    fn the_set_is_bounded() {
        let interned = Interned::default();
        for i in 0..MAX_INTERNED + 10 {
            interned.namespace(&format!("t{i}")).unwrap();
        }
        assert_eq!(interned.names.lock().unwrap().len(), MAX_INTERNED);
        assert_eq!(interned.namespace("late").unwrap().as_str(), "late");
    }
}
