//! The backup file (`mesign-hsm backup export`): every token object of a
//! token, private and secret keys as blobs wrapped under the cloning
//! domain's key, and one integrity tag made by the card.
//!
//! `BackupFile { magic, version, body, tag }`, CBOR. `body` is the CBOR of
//! [`BackupBody`] kept as bytes, so that the tag covers exactly the bytes
//! on disk: `tag` = HMAC-SHA256, under a key only cards of the domain can
//! derive, over SHA-256 of `body`. Anyone can read the body (labels, ids,
//! certificates, public keys are in clear); no one outside the domain can
//! open its keys or change a byte unnoticed.

use minicbor::{Decode, Encode};

use crate::message::{Attribute, Bytes};

/// The first field of every backup file.
pub const BACKUP_MAGIC: &str = "MeSign HSM backup";
/// The format version this crate reads and writes.
pub const BACKUP_VERSION: u16 = 1;

/// A backup file as stored.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BackupFile {
    /// [`BACKUP_MAGIC`].
    #[n(0)]
    pub magic: String,
    /// [`BACKUP_VERSION`].
    #[n(1)]
    pub version: u16,
    /// The CBOR of [`BackupBody`].
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub body: Bytes,
    /// The card's tag over SHA-256 of `body`.
    #[n(3)]
    #[cbor(with = "minicbor::bytes")]
    pub tag: Bytes,
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BackupBody {
    /// The domain id of the card that made it.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub domain_id: Bytes,
    /// The serial of that card.
    #[n(1)]
    pub source_serial: String,
    /// Seconds since the Unix epoch, by the daemon's clock.
    #[n(2)]
    pub created: u64,
    #[n(3)]
    pub objects: Vec<BackupObject>,
}

/// One token object: every attribute as stored, and for a key the card
/// holds, its domain-wrapped blob.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BackupObject {
    #[n(0)]
    pub attributes: Vec<Attribute>,
    #[n(1)]
    pub key: Option<BackupKey>,
}

/// A private or secret key, wrapped under the domain key with its policy
/// and a SHA-256 of the CBOR of its object's `attributes` as associated
/// data.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BackupKey {
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub blob: Bytes,
    /// The card's key policy in its own encoding (opaque here).
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub policy: Bytes,
}

impl BackupFile {
    /// Parses a file and its body; `None` if either is not a backup of
    /// this version. Says nothing about the tag: only a card checks it.
    pub fn parse(bytes: &[u8]) -> Option<(BackupFile, BackupBody)> {
        let file: BackupFile = minicbor::decode(bytes).ok()?;
        if file.magic != BACKUP_MAGIC || file.version != BACKUP_VERSION {
            return None;
        }
        let body = minicbor::decode(&file.body).ok()?;
        Some((file, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_other_versions_are_not_read() {
        let body = BackupBody {
            domain_id: vec![1; 16],
            source_serial: "0011".into(),
            created: 5,
            objects: vec![BackupObject {
                attributes: vec![Attribute {
                    ty: 3,
                    value: b"label".to_vec(),
                }],
                key: Some(BackupKey {
                    blob: vec![2; 40],
                    policy: vec![0x80],
                }),
            }],
        };
        let mut file = BackupFile {
            magic: BACKUP_MAGIC.into(),
            version: BACKUP_VERSION,
            body: minicbor::to_vec(&body).unwrap(),
            tag: vec![9; 32],
        };
        let bytes = minicbor::to_vec(&file).unwrap();
        assert_eq!(BackupFile::parse(&bytes), Some((file.clone(), body)));
        file.version = 2;
        assert_eq!(BackupFile::parse(&minicbor::to_vec(&file).unwrap()), None);
        assert_eq!(BackupFile::parse(b"not cbor"), None);
    }
}
