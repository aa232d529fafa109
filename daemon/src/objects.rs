//! The in-memory objects of one token, with the indexes C_FindObjects uses.
//!
//! The store is the source of truth across restarts; this table is loaded
//! from it at start and updated after every committed change, so searches
//! and signatures never touch the disk. Token and session objects live here
//! side by side; session objects carry their owning session.
//!
//! A handle is what an application sees: a public object's handle is its
//! id; a private object's handle also carries, above the id bits, the
//! generation of the login it was handed out under, so that it stops
//! working at C_Logout and stays dead after the next C_Login (PKCS#11 2.40
//! §5.6). CKA_PRIVATE never changes after creation, so neither does the
//! kind of handle an object has.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cryptoki_sys::*;

use crate::attributes::{self, AttrMap};
use crate::sessions::AppKey;
use crate::store::CardKey;

/// First handle of session objects: handles at and above it are never
/// stored, so they cannot collide with token object ids.
pub const SESSION_OBJECT_BASE: u64 = 1 << 40;

/// Bits of a handle that hold the object id: token ids count up from 1 and
/// session objects from [`SESSION_OBJECT_BASE`], so both stay below 2^41
/// for any daemon lifetime.
const ID_BITS: u32 = 41;

/// How many login generations a handle can tell apart (2^23, over 8
/// million logins daemon-wide before a number comes round again).
pub const LOGIN_GENERATIONS: u64 = 1 << (64 - ID_BITS);

/// The handle under which a session logged in with `generation` sees the
/// object `id`.
pub fn handle(id: u64, object: &Object, generation: u64) -> u64 {
    if object.is_private() {
        id | (generation << ID_BITS)
    } else {
        id
    }
}

/// Splits a handle into (object id, login generation).
pub fn split_handle(handle: u64) -> (u64, u64) {
    (handle & ((1 << ID_BITS) - 1), handle >> ID_BITS)
}

/// One object.
#[derive(Debug, Clone)]
pub struct Object {
    pub attrs: AttrMap,
    /// The card key of a generated private key.
    pub card_key: Option<Arc<CardKey>>,
    /// The session a session object belongs to; `None` for token objects.
    pub owner: Option<Owner>,
}

/// The session (and its application) a session object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub session: u64,
    pub app: AppKey,
}

impl Object {
    /// True if the object needs a user login to be seen.
    pub fn is_private(&self) -> bool {
        attributes::flag(&self.attrs, CKA_PRIVATE) == Some(true)
    }

    /// True for token (persistent) objects.
    pub fn is_token(&self) -> bool {
        self.owner.is_none()
    }
}

/// Objects by handle, with indexes on class, CKA_ID and CKA_LABEL.
#[derive(Debug, Default)]
pub struct ObjectTable {
    objects: HashMap<u64, Object>,
    by_class: HashMap<u64, BTreeSet<u64>>,
    by_id: HashMap<Vec<u8>, BTreeSet<u64>>,
    by_label: HashMap<Vec<u8>, BTreeSet<u64>>,
}

impl ObjectTable {
    pub fn get(&self, handle: u64) -> Option<&Object> {
        self.objects.get(&handle)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Number of token (persistent) objects.
    pub fn token_objects(&self) -> usize {
        self.objects.values().filter(|o| o.is_token()).count()
    }

    /// Adds or replaces the object at `handle`.
    pub fn insert(&mut self, handle: u64, object: Object) {
        self.remove(handle);
        if let Some(class) = attributes::ulong(&object.attrs, CKA_CLASS) {
            self.by_class.entry(class).or_default().insert(handle);
        }
        if let Some(id) = object.attrs.get(&CKA_ID) {
            self.by_id.entry(id.clone()).or_default().insert(handle);
        }
        if let Some(label) = object.attrs.get(&CKA_LABEL) {
            self.by_label
                .entry(label.clone())
                .or_default()
                .insert(handle);
        }
        self.objects.insert(handle, object);
    }

    /// Removes the object at `handle`, returning it.
    pub fn remove(&mut self, handle: u64) -> Option<Object> {
        let object = self.objects.remove(&handle)?;
        if let Some(class) = attributes::ulong(&object.attrs, CKA_CLASS) {
            unindex(&mut self.by_class, &class, handle);
        }
        if let Some(id) = object.attrs.get(&CKA_ID) {
            unindex(&mut self.by_id, id, handle);
        }
        if let Some(label) = object.attrs.get(&CKA_LABEL) {
            unindex(&mut self.by_label, label, handle);
        }
        Some(object)
    }

    /// Handles of the objects `owner` (a session) owns.
    pub fn owned_by(&self, session: u64) -> Vec<u64> {
        self.objects
            .iter()
            .filter(|(_, o)| o.owner.is_some_and(|w| w.session == session))
            .map(|(&h, _)| h)
            .collect()
    }

    /// Ids of the private session objects `app` owns: C_Logout destroys
    /// them (PKCS#11 2.40 §5.6).
    pub fn private_owned_by_app(&self, app: AppKey) -> Vec<u64> {
        self.objects
            .iter()
            .filter(|(_, o)| o.is_private() && o.owner.is_some_and(|w| w.app == app))
            .map(|(&h, _)| h)
            .collect()
    }

    /// Handles of all token objects.
    pub fn token_handles(&self) -> Vec<u64> {
        self.objects
            .iter()
            .filter(|(_, o)| o.is_token())
            .map(|(&h, _)| h)
            .collect()
    }

    /// Handles, ascending, of every object that matches `template` exactly
    /// and passes `visible`.
    pub fn find(&self, template: &AttrMap, visible: impl Fn(&Object) -> bool) -> Vec<u64> {
        // Start from the narrowest index the template allows.
        let candidates: Option<&BTreeSet<u64>> = template
            .get(&CKA_ID)
            .map(|id| self.by_id.get(id))
            .or_else(|| template.get(&CKA_LABEL).map(|l| self.by_label.get(l)))
            .or_else(|| attributes::ulong(template, CKA_CLASS).map(|c| self.by_class.get(&c)))
            .map(|set| set.unwrap_or(&EMPTY));
        let check = |h: &u64| {
            let o = &self.objects[h];
            visible(o) && attributes::matches(&o.attrs, template)
        };
        match candidates {
            Some(set) => set.iter().filter(|h| check(h)).copied().collect(),
            None => {
                let mut all: Vec<u64> = self.objects.keys().filter(|h| check(h)).copied().collect();
                all.sort_unstable();
                all
            }
        }
    }
}

static EMPTY: BTreeSet<u64> = BTreeSet::new();

fn unindex<K>(index: &mut HashMap<K::Owned, BTreeSet<u64>>, key: &K, handle: u64)
where
    K: std::hash::Hash + Eq + ToOwned + ?Sized,
    K::Owned: std::hash::Hash + Eq + std::borrow::Borrow<K>,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(&handle);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::attr;

    fn object(class: u64, id: &[u8], label: &[u8], private: bool) -> Object {
        let mut attrs = AttrMap::new();
        attrs.insert(CKA_CLASS, attr::ulong_value(class));
        attrs.insert(CKA_ID, id.to_vec());
        attrs.insert(CKA_LABEL, label.to_vec());
        attrs.insert(CKA_PRIVATE, attr::bool_value(private));
        Object {
            attrs,
            card_key: None,
            owner: None,
        }
    }

    fn template(list: &[(u64, Vec<u8>)]) -> AttrMap {
        list.iter().cloned().collect()
    }

    #[test]
    fn find_uses_indexes_and_still_checks_every_attribute() {
        let mut table = ObjectTable::default();
        table.insert(1, object(CKO_CERTIFICATE, b"a", b"one", false));
        table.insert(2, object(CKO_PRIVATE_KEY, b"a", b"one", true));
        table.insert(3, object(CKO_PUBLIC_KEY, b"b", b"two", false));
        let all = |_: &Object| true;
        assert_eq!(
            table.find(&template(&[(CKA_ID, b"a".to_vec())]), all),
            vec![1, 2]
        );
        let key_a = template(&[
            (CKA_ID, b"a".to_vec()),
            (CKA_CLASS, attr::ulong_value(CKO_PRIVATE_KEY)),
        ]);
        assert_eq!(table.find(&key_a, all), vec![2]);
        assert_eq!(
            table.find(&template(&[(CKA_LABEL, b"two".to_vec())]), all),
            vec![3]
        );
        assert_eq!(
            table.find(&template(&[(CKA_ID, b"zz".to_vec())]), all),
            Vec::<u64>::new()
        );
        assert_eq!(table.find(&AttrMap::new(), all), vec![1, 2, 3]);
        assert_eq!(
            table.find(&AttrMap::new(), |o: &Object| !o.is_private()),
            vec![1, 3]
        );
        let unknown = template(&[(CKA_URL, b"x".to_vec())]);
        assert!(table.find(&unknown, all).is_empty());
    }

    #[test]
    fn replacing_and_removing_keep_indexes_exact() {
        let mut table = ObjectTable::default();
        table.insert(1, object(CKO_DATA, b"a", b"old", false));
        table.insert(1, object(CKO_DATA, b"b", b"new", false));
        let all = |_: &Object| true;
        assert!(table
            .find(&template(&[(CKA_LABEL, b"old".to_vec())]), all)
            .is_empty());
        assert_eq!(
            table.find(&template(&[(CKA_ID, b"b".to_vec())]), all),
            vec![1]
        );
        assert!(table.remove(1).is_some());
        assert!(table.remove(1).is_none());
        assert!(table.is_empty());
        assert!(table.by_class.is_empty() && table.by_id.is_empty() && table.by_label.is_empty());
    }

    #[test]
    fn private_handles_carry_the_generation_and_public_ones_do_not() {
        let private = object(CKO_PRIVATE_KEY, b"a", b"k", true);
        let public = object(CKO_PUBLIC_KEY, b"a", b"k", false);
        let top = LOGIN_GENERATIONS - 1;
        for id in [1, SESSION_OBJECT_BASE + 5] {
            assert_eq!(handle(id, &public, 7), id);
            assert_eq!(split_handle(handle(id, &public, 7)), (id, 0));
            for generation in [1, 2, top] {
                let h = handle(id, &private, generation);
                assert_ne!(h, id);
                assert_eq!(split_handle(h), (id, generation));
            }
            assert_ne!(handle(id, &private, 1), handle(id, &private, 2));
        }
    }

    #[test]
    fn search_among_ten_thousand_objects_is_indexed() {
        let mut table = ObjectTable::default();
        for i in 0..10_000u64 {
            let id = i.to_be_bytes();
            table.insert(i + 1, object(CKO_PRIVATE_KEY, &id, b"k", false));
        }
        let wanted = template(&[(CKA_ID, 4321u64.to_be_bytes().to_vec())]);
        let start = std::time::Instant::now();
        for _ in 0..1000 {
            assert_eq!(table.find(&wanted, |_| true), vec![4322]);
        }
        // A scan of 10,000 objects per search would take far longer than this.
        assert!(
            start.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
    }
}
