//! A map for the per-namespace bookkeeping that most namespaces keep one or two entries in (the
//! status counts of a journal, the services of a change index): a short list while it is short,
//! a hash map once it is not.
//!
//! A hash map of one entry allocates room for four (about 120 bytes for a name and a number);
//! a list of one entry allocates exactly it (24). With a hundred thousand namespaces that is the
//! difference between a namespace costing about as much as its instance or several times more.
//! Past [`MAX_LISTED`] entries a list would cost a scan per lookup, so the map turns into a
//! [`KeyedMap`]; it turns back into a list when it shrinks to half that, so a map that was large
//! once does not keep a large table.

use super::keyed_hash::KeyedMap;
use std::borrow::Borrow;
use std::hash::Hash;

/// Most entries kept as a list.
pub const MAX_LISTED: usize = 8;

pub enum SmallMap<K, V> {
    Listed(Vec<(K, V)>),
    Hashed(Box<KeyedMap<K, V>>),
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap::Listed(Vec::new())
    }
}

impl<K: Eq + Hash, V> SmallMap<K, V> {
    pub fn len(&self) -> usize {
        match self {
            SmallMap::Listed(list) => list.len(),
            SmallMap::Hashed(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Listed(list) => list.iter().find(|(k, _)| k.borrow() == key).map(|(_, v)| v),
            SmallMap::Hashed(map) => map.get(key),
        }
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        match self {
            SmallMap::Listed(list) => list
                .iter_mut()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, v)| v),
            SmallMap::Hashed(map) => map.get_mut(key),
        }
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(held) = self.get_mut(&key) {
            return Some(std::mem::replace(held, value));
        }
        match self {
            SmallMap::Listed(list) if list.len() < MAX_LISTED => {
                // Grown one entry at a time: most of these lists hold one or two entries for
                // their whole life, and doubling would leave half of every list unused.
                list.reserve_exact(1);
                list.push((key, value));
            }
            SmallMap::Listed(list) => {
                let mut map: KeyedMap<K, V> = std::mem::take(list).into_iter().collect();
                map.insert(key, value);
                *self = SmallMap::Hashed(Box::new(map));
            }
            SmallMap::Hashed(map) => {
                map.insert(key, value);
            }
        }
        None
    }

    /// The value of `key`, inserted as `make()` when absent.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V
    where
        K: Clone,
    {
        if !self.contains_key(&key) {
            self.insert(key.clone(), make());
        }
        self.get_mut(&key).expect("the key was just inserted")
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let removed = match self {
            SmallMap::Listed(list) => {
                let at = list.iter().position(|(k, _)| k.borrow() == key)?;
                Some(list.swap_remove(at).1)
            }
            SmallMap::Hashed(map) => map.remove(key),
        };
        self.shrink();
        removed
    }

    /// Keeps the entries `keep` says so of.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        match self {
            SmallMap::Listed(list) => list.retain_mut(|(k, v)| keep(k, v)),
            SmallMap::Hashed(map) => map.retain(|k, v| keep(k, v)),
        }
        self.shrink();
    }

    pub fn clear(&mut self) {
        *self = SmallMap::default();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (listed, hashed) = match self {
            SmallMap::Listed(list) => (Some(list.iter().map(|(k, v)| (k, v))), None),
            SmallMap::Hashed(map) => (None, Some(map.iter())),
        };
        listed
            .into_iter()
            .flatten()
            .chain(hashed.into_iter().flatten())
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// A list again once the map holds half of what a list may, and no spare room in a list
    /// that lost entries.
    fn shrink(&mut self) {
        match self {
            SmallMap::Hashed(map) if map.len() <= MAX_LISTED / 2 => {
                let list: Vec<(K, V)> = std::mem::take(&mut **map).into_iter().collect();
                *self = SmallMap::Listed(list);
            }
            SmallMap::Listed(list) if list.capacity() > list.len() + 1 => list.shrink_to_fit(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_map_of_one_entry_allocates_one_entry() {
        let mut map: SmallMap<Arc<str>, u64> = SmallMap::default();
        map.insert("UP".into(), 1);
        let SmallMap::Listed(list) = &map else {
            panic!("one entry is listed")
        };
        assert_eq!(list.capacity(), 1);
        assert_eq!(
            std::mem::size_of::<SmallMap<Arc<str>, u64>>(),
            std::mem::size_of::<Vec<(Arc<str>, u64)>>(),
            "the hashed form fits beside the list's fields"
        );
    }

    #[test]
    fn behaves_as_a_map_listed_hashed_and_back() {
        let mut map: SmallMap<Arc<str>, u64> = SmallMap::default();
        let mut model = std::collections::HashMap::new();
        for round in 0..3u64 {
            for n in 0..40u64 {
                let key: Arc<str> = format!("k{}", (n * 7 + round) % 23).into();
                if n % 3 == 2 {
                    assert_eq!(map.remove(&*key), model.remove(&key), "remove {key}");
                } else {
                    assert_eq!(map.insert(key.clone(), n), model.insert(key, n));
                }
                assert_eq!(map.len(), model.len());
                for (k, v) in &model {
                    assert_eq!(map.get(&**k), Some(v));
                }
                assert_eq!(map.get("absent"), None);
                assert_eq!(map.iter().count(), model.len());
            }
            map.retain(|k, _| !k.ends_with('1'));
            model.retain(|k, _| !k.ends_with('1'));
            assert_eq!(map.len(), model.len());
        }
        *map.get_or_insert_with("new".into(), || 0) += 5;
        assert_eq!(map.get("new"), Some(&5));
        map.retain(|_, _| false);
        assert!(map.is_empty());
        assert!(
            matches!(map, SmallMap::Listed(_)),
            "an emptied map is a list"
        );
        for n in 0..=MAX_LISTED {
            map.insert(format!("k{n}").into(), 0);
        }
        assert!(matches!(map, SmallMap::Hashed(_)), "a long list is hashed");
        map.clear();
        assert!(map.is_empty());
    }
}
