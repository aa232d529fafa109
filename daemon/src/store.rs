//! The persistent state of one token: a redb database per slot.
//!
//! Two tables: `token` holds the single [`TokenRecord`] (label, PIN records,
//! failure counters, the object id counter) and `objects` maps object ids to
//! CBOR [`ObjectRecord`]s. Every change is one write transaction committed
//! with immediate durability before the daemon replies, so an acknowledged
//! operation survives kill -9 and a half-done one leaves no trace.
//! Concurrent changes share one transaction (see [`crate::commit`]).
//!
//! Power-loss semantics: a commit returns after redb's two-phase commit has
//! fsynced the data and then the header that makes it current; every commit
//! also records redb's allocator state ("quick repair"), so the first open
//! after SIGKILL or a power cut needs no walk over the whole file. What was
//! not committed is gone; nothing partial is ever read back.

use std::path::Path;
use std::sync::Arc;

use mesign_proto::Attribute;
use minicbor::{Decode, Encode};
use pci_driver_shim::command::KeyPolicy;
use redb::{Builder, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::pin::PinRecord;

const TOKEN: TableDefinition<&str, &[u8]> = TableDefinition::new("token");
const OBJECTS: TableDefinition<u64, &[u8]> = TableDefinition::new("objects");
const TOKEN_KEY: &str = "token";

/// Why the store failed.
#[derive(Debug)]
pub enum StoreError {
    /// redb reported an error (I/O, corruption, lock).
    Database(redb::Error),
    /// A stored record does not decode: the file is damaged or from an
    /// incompatible version.
    Decode(minicbor::decode::Error),
    /// The state directory could not be created.
    Io(std::io::Error),
    /// The group commit this change was part of failed; every change in it
    /// shares the error.
    Batch(Arc<StoreError>),
    /// The commit of a batch panicked.
    CommitPanicked,
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        StoreError::Database(e.into())
    }
}

/// Everything about a token except its objects.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TokenRecord {
    /// 32 bytes, blank padded.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub label: Vec<u8>,
    #[n(1)]
    pub initialized: bool,
    /// The card's serial when the token was first created.
    #[n(2)]
    pub serial: String,
    #[n(3)]
    pub so_pin: Option<PinRecord>,
    #[n(4)]
    pub user_pin: Option<PinRecord>,
    #[n(5)]
    pub user_failures: u32,
    #[n(6)]
    pub so_failures: u32,
    /// The next token object id; ids are never reused.
    #[n(7)]
    pub next_object_id: u64,
}

impl TokenRecord {
    /// A token that has never been initialized.
    pub fn blank(serial: String) -> TokenRecord {
        TokenRecord {
            label: vec![b' '; 32],
            initialized: false,
            serial,
            so_pin: None,
            user_pin: None,
            user_failures: 0,
            so_failures: 0,
            next_object_id: 1,
        }
    }
}

/// A private key as the card gave it: the wrapped key and the policy it is
/// bound to.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CardKey {
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub blob: Vec<u8>,
    #[n(1)]
    pub policy: KeyPolicy,
}

/// One object as stored: its attributes in wire form and, for private keys,
/// the card key.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ObjectRecord {
    #[n(0)]
    pub attributes: Vec<Attribute>,
    #[n(1)]
    pub card_key: Option<CardKey>,
}

impl ObjectRecord {
    /// The CBOR encoding (also the object's reported size).
    pub fn to_bytes(&self) -> Vec<u8> {
        minicbor::to_vec(self).expect("encoding into a Vec is infallible")
    }
}

/// One edit of the objects table; a transaction applies its edits in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Remove every object (C_InitToken).
    ClearObjects,
    Put(u64, ObjectRecord),
    Delete(u64),
}

/// An opened store with the token record and every object it holds.
pub type Opened = (Store, TokenRecord, Vec<(u64, ObjectRecord)>);

fn builder() -> Builder {
    let mut builder = Builder::new();
    builder.set_repair_callback(|session| {
        if session.progress() == 0.0 {
            tracing::warn!("the token store was not closed cleanly and needs a repair");
        }
    });
    builder
}

/// An open token database.
pub struct Store {
    db: Database,
    /// False for the in-memory store of the fuzz targets, where fsyncs
    /// and crash-recovery bookkeeping would only slow the fuzzer down.
    durable: bool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and reads the token
    /// record, creating a blank one with `serial` if there is none, and all
    /// objects.
    pub fn open(path: &Path, serial: &str) -> Result<Opened, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
        }
        Store::load(builder().create(path)?, true, serial)
    }

    /// A store that lives in memory only, for the fuzz targets: the same
    /// transactions without the file.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn in_memory(serial: &str) -> Result<Opened, StoreError> {
        let backend = redb::backends::InMemoryBackend::new();
        Store::load(builder().create_with_backend(backend)?, false, serial)
    }

    fn load(db: Database, durable: bool, serial: &str) -> Result<Opened, StoreError> {
        let store = Store { db, durable };
        let existing = {
            let txn = store.db.begin_read()?;
            match txn.open_table(TOKEN) {
                Ok(table) => match table.get(TOKEN_KEY)? {
                    Some(v) => Some(
                        minicbor::decode::<TokenRecord>(v.value()).map_err(StoreError::Decode)?,
                    ),
                    None => None,
                },
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        let token = match existing {
            Some(t) => t,
            None => {
                let blank = TokenRecord::blank(serial.to_string());
                store.apply(Some(&blank), &[])?;
                blank
            }
        };
        let mut objects = Vec::new();
        let txn = store.db.begin_read()?;
        let table = txn.open_table(OBJECTS)?;
        for entry in table.iter()? {
            let (k, v) = entry?;
            let record = minicbor::decode::<ObjectRecord>(v.value()).map_err(StoreError::Decode)?;
            objects.push((k.value(), record));
        }
        Ok((store, token, objects))
    }

    /// Writes `token` (if given) and applies `edits` in order, in one
    /// durable write transaction.
    pub fn apply(&self, token: Option<&TokenRecord>, edits: &[Edit]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        if self.durable {
            txn.set_durability(Durability::Immediate)?;
            // Records the allocator state with the commit (and turns on
            // two-phase commit): the open after a crash needs no repair.
            txn.set_quick_repair(true);
        } else {
            txn.set_durability(Durability::None)?;
        }
        {
            let mut tokens = txn.open_table(TOKEN)?;
            if let Some(token) = token {
                let bytes = minicbor::to_vec(token).expect("encoding into a Vec is infallible");
                tokens.insert(TOKEN_KEY, bytes.as_slice())?;
            }
            let mut objects = txn.open_table(OBJECTS)?;
            for edit in edits {
                match edit {
                    Edit::ClearObjects => objects.retain(|_, _| false)?,
                    Edit::Put(id, record) => {
                        objects.insert(*id, record.to_bytes().as_slice())?;
                    }
                    Edit::Delete(id) => {
                        objects.remove(*id)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pci_driver_shim::command::{Curve, KeySpec};

    fn record(label: &[u8]) -> ObjectRecord {
        ObjectRecord {
            attributes: vec![Attribute {
                ty: cryptoki_sys::CKA_LABEL,
                value: label.to_vec(),
            }],
            card_key: Some(CardKey {
                blob: vec![1, 2, 3],
                policy: KeyPolicy {
                    object_id: 5,
                    spec: KeySpec::Ec(Curve::P256),
                    sign: true,
                    decrypt: false,
                    unwrap: false,
                    derive: false,
                    sensitive: true,
                    extractable: false,
                    secret: None,
                },
            }),
        }
    }

    #[test]
    fn changes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slot-0/token.redb");
        let (store, mut token, objects) = Store::open(&path, "S1").unwrap();
        assert!(objects.is_empty());
        assert_eq!(token, TokenRecord::blank("S1".into()));
        token.initialized = true;
        token.user_failures = 3;
        let (a, b) = (record(b"a"), record(b"b"));
        store
            .apply(
                Some(&token),
                &[Edit::Put(5, a.clone()), Edit::Put(6, b.clone())],
            )
            .unwrap();
        store.apply(None, &[Edit::Delete(6)]).unwrap();
        drop(store);
        let (store, back, objects) = Store::open(&path, "other serial").unwrap();
        assert_eq!(back, token);
        assert_eq!(objects, vec![(5, a)]);
        store
            .apply(
                None,
                &[
                    Edit::Put(7, b.clone()),
                    Edit::ClearObjects,
                    Edit::Put(8, b.clone()),
                ],
            )
            .unwrap();
        drop(store);
        let (_, _, objects) = Store::open(&path, "S1").unwrap();
        assert_eq!(objects, vec![(8, b)], "edits apply in order");
    }

    #[test]
    fn an_unclean_close_needs_no_repair() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.redb");
        let (store, token, _) = Store::open(&path, "S1").unwrap();
        store
            .apply(Some(&token), &[Edit::Put(1, record(b"a"))])
            .unwrap();
        // A copy of the file while the database is open is what SIGKILL or
        // a power cut leaves behind: no clean-shutdown marker.
        let crashed = dir.path().join("crashed.redb");
        std::fs::copy(&path, &crashed).unwrap();
        drop(store);
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&repaired);
        let db = Builder::new()
            .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::SeqCst))
            .create(&crashed)
            .unwrap();
        drop(db);
        assert!(
            !repaired.load(std::sync::atomic::Ordering::SeqCst),
            "the store needed a repair"
        );
        let (_, _, objects) = Store::open(&crashed, "S1").unwrap();
        assert_eq!(objects.len(), 1);
    }
}
