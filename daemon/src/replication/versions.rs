//! The replication state of each token object: its version, digest and
//! whether it was deleted (a tombstone, so that a box that missed the
//! deletion does not bring the object back), in its own redb database
//! beside the token stores (`<state dir>/replication.redb`).
//!
//! The token store and this one are two databases: a local change records
//! its new version before the object commits (a crash in between leaves a
//! version raised for an unchanged object, which peers apply as a no-op);
//! a peer's change commits the object first and then its version (a crash
//! in between makes the peer send it again, and applying is idempotent).

use std::collections::BTreeMap;
use std::path::Path;

use mesign_proto::ReplicaVersion;
use redb::{Database, ReadableDatabase, TableDefinition};

const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");

/// The digest a deletion carries: it beats any object's at equal version.
pub const DELETED_DIGEST: [u8; 32] = [0xff; 32];

/// True when `a` supersedes `b`: a higher version, or the same version
/// and a higher digest (the concurrent change both boxes let win).
pub fn supersedes(a: &ReplicaVersion, b: Option<&ReplicaVersion>) -> bool {
    match b {
        None => true,
        Some(b) => (a.version, &a.digest) > (b.version, &b.digest),
    }
}

pub struct Versions {
    db: Database,
}

fn key(slot: u64, unique_id: &str) -> String {
    format!("{slot}/{unique_id}")
}

impl Versions {
    pub fn open(path: &Path) -> Result<Versions, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(VERSIONS)?;
        txn.commit()?;
        Ok(Versions { db })
    }

    pub fn get(&self, slot: u64, unique_id: &str) -> Result<Option<ReplicaVersion>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VERSIONS)?;
        Ok(table
            .get(key(slot, unique_id).as_str())?
            .and_then(|v| minicbor::decode(v.value()).ok()))
    }

    /// Every version recorded for `slot`, by unique id.
    pub fn all(&self, slot: u64) -> Result<BTreeMap<String, ReplicaVersion>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(VERSIONS)?;
        let prefix = format!("{slot}/");
        let mut out = BTreeMap::new();
        for entry in table.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            if let Ok(version) = minicbor::decode::<ReplicaVersion>(v.value()) {
                out.insert(version.unique_id.clone(), version);
            }
        }
        Ok(out)
    }

    /// Records `versions` of `slot` durably, in one transaction.
    pub fn put(&self, slot: u64, versions: &[ReplicaVersion]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(VERSIONS)?;
            for v in versions {
                let bytes = minicbor::to_vec(v).expect("encoding into a Vec is infallible");
                table.insert(key(slot, &v.unique_id).as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, version: u64, digest: u8) -> ReplicaVersion {
        ReplicaVersion {
            unique_id: id.into(),
            version,
            digest: vec![digest; 32],
            deleted: false,
        }
    }

    #[test]
    fn higher_versions_win_and_digests_break_ties() {
        assert!(supersedes(&v("a", 1, 0), None));
        assert!(supersedes(&v("a", 2, 0), Some(&v("a", 1, 9))));
        assert!(!supersedes(&v("a", 1, 9), Some(&v("a", 2, 0))));
        assert!(supersedes(&v("a", 2, 5), Some(&v("a", 2, 4))));
        assert!(!supersedes(&v("a", 2, 4), Some(&v("a", 2, 4))));
        assert!(supersedes(&v("a", 2, 0xff), Some(&v("a", 2, 0xfe))));
    }

    #[test]
    fn versions_persist_per_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        {
            let store = Versions::open(&path).unwrap();
            store.put(0, &[v("a", 1, 1), v("b", 3, 1)]).unwrap();
            store.put(1, &[v("a", 7, 1)]).unwrap();
            store.put(0, &[v("a", 2, 1)]).unwrap();
        }
        let store = Versions::open(&path).unwrap();
        assert_eq!(store.get(0, "a").unwrap().unwrap().version, 2);
        assert_eq!(store.get(1, "a").unwrap().unwrap().version, 7);
        assert!(store.get(2, "a").unwrap().is_none());
        let all = store.all(0).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["b"].version, 3);
        assert_eq!(store.all(1).unwrap().len(), 1);
    }
}
