//! The persistent state of one token: a redb database per slot.
//!
//! Two tables: `token` holds the single [`TokenRecord`] (label, PIN records,
//! failure counters, the object id counter) and `objects` maps object ids to
//! CBOR [`ObjectRecord`]s. Every change is one write transaction committed
//! with immediate durability before the daemon replies, so an acknowledged
//! operation survives kill -9 and a half-done one leaves no trace.

use std::path::Path;

use mesign_proto::Attribute;
use minicbor::{Decode, Encode};
use pci_driver_shim::command::KeyPolicy;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

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

/// One atomic change to a token's store.
#[derive(Debug, Default)]
pub struct Change<'a> {
    pub token: Option<&'a TokenRecord>,
    /// Remove every object before applying `put` (C_InitToken).
    pub clear_objects: bool,
    pub put: Vec<(u64, &'a ObjectRecord)>,
    pub delete: Vec<u64>,
}

/// An opened store with the token record and every object it holds.
pub type Opened = (Store, TokenRecord, Vec<(u64, ObjectRecord)>);

/// An open token database.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and reads the token
    /// record, creating a blank one with `serial` if there is none, and all
    /// objects.
    pub fn open(path: &Path, serial: &str) -> Result<Opened, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(StoreError::Io)?;
        }
        let db = Database::create(path)?;
        let store = Store { db };
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
                store.apply(&Change {
                    token: Some(&blank),
                    ..Change::default()
                })?;
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

    /// Applies `change` in one durable write transaction.
    pub fn apply(&self, change: &Change<'_>) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut tokens = txn.open_table(TOKEN)?;
            if let Some(token) = change.token {
                let bytes = minicbor::to_vec(token).expect("encoding into a Vec is infallible");
                tokens.insert(TOKEN_KEY, bytes.as_slice())?;
            }
            let mut objects = txn.open_table(OBJECTS)?;
            if change.clear_objects {
                objects.retain(|_, _| false)?;
            }
            for id in &change.delete {
                objects.remove(*id)?;
            }
            for (id, record) in &change.put {
                objects.insert(*id, record.to_bytes().as_slice())?;
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
            .apply(&Change {
                token: Some(&token),
                put: vec![(5, &a), (6, &b)],
                ..Change::default()
            })
            .unwrap();
        store
            .apply(&Change {
                delete: vec![6],
                ..Change::default()
            })
            .unwrap();
        drop(store);
        let (store, back, objects) = Store::open(&path, "other serial").unwrap();
        assert_eq!(back, token);
        assert_eq!(objects, vec![(5, a)]);
        store
            .apply(&Change {
                clear_objects: true,
                ..Change::default()
            })
            .unwrap();
        drop(store);
        let (_, _, objects) = Store::open(&path, "S1").unwrap();
        assert!(objects.is_empty());
    }
}
