//! The cloning domain and backups, as the daemon serves them: who may ask
//! (the SO creates and joins domains; the user, who owns the keys, exports
//! and imports them), which objects go into a backup, and how a restore
//! lands in the token store. The card does the cryptography (see the
//! shim's `firmware/domain.rs`); keys pass through here only wrapped.
//!
//! A child module of `hsm` so that it shares the session and object
//! checks there.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lc_rs::digest;
use cryptoki_sys::*;
use mesign_proto::backup::{BackupBody, BackupFile, BackupKey, BackupObject};
use mesign_proto::backup::{BACKUP_MAGIC, BACKUP_VERSION};
use mesign_proto::{Attribute, DomainShare, DomainShareInput, SkippedObject, MAX_FRAME};
use pci_driver_shim::command::{
    CardRequest, CardResponse, DomainShare as CardShare, KeyPolicy, ShareInput,
};
use zeroize::Zeroize;

use super::{Hsm, Slot};
use crate::attributes;
use crate::card::CardFailure;
use crate::error::HsmError;
use crate::objects::Object;
use crate::sessions::{AppKey, Login, SessionView};
use crate::store::CardKey;

/// Room left in a reply frame for everything but the backup file.
const FRAME_MARGIN: usize = 1024;

impl Hsm {
    /// An R/W session logged in as `who`.
    fn admin_view(&self, app: AppKey, session: u64, who: Login) -> Result<SessionView, HsmError> {
        let view = self.view(app, session)?;
        if view.login != Some(who) {
            return Err(HsmError::UserNotLoggedIn);
        }
        if !view.rw {
            return Err(HsmError::SessionReadOnly);
        }
        Ok(view)
    }

    /// `domain create`: the SO asks the card for a new domain.
    pub(super) fn domain_create(
        &self,
        app: AppKey,
        session: u64,
        threshold: u8,
        mut passphrases: Vec<Vec<u8>>,
        replace: bool,
    ) -> Result<Vec<DomainShare>, HsmError> {
        let answer = self.admin_view(app, session, Login::So).and_then(|view| {
            let request = CardRequest::DomainCreate {
                threshold,
                passphrases: passphrases.clone(),
                replace,
            };
            let answer = self.slot(view.slot)?.card.call(&request);
            wipe_create(request);
            Ok(answer?)
        });
        passphrases.iter_mut().for_each(Zeroize::zeroize);
        match answer? {
            CardResponse::DomainShares(shares) => Ok(shares.into_iter().map(to_wire).collect()),
            _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        }
    }

    /// `domain join`: the SO gives the card the shares and passphrases.
    pub(super) fn domain_join(
        &self,
        app: AppKey,
        session: u64,
        mut shares: Vec<DomainShareInput>,
        replace: bool,
    ) -> Result<Option<Vec<u8>>, HsmError> {
        let answer = self.admin_view(app, session, Login::So).and_then(|view| {
            let request = CardRequest::DomainJoin {
                shares: shares
                    .iter()
                    .map(|s| ShareInput {
                        share: from_wire(&s.share),
                        passphrase: s.passphrase.clone(),
                    })
                    .collect(),
                replace,
            };
            let answer = self.slot(view.slot)?.card.call(&request);
            if let CardRequest::DomainJoin { mut shares, .. } = request {
                shares.iter_mut().for_each(|s| s.passphrase.zeroize());
            }
            Ok(answer?)
        });
        shares.iter_mut().for_each(|s| s.passphrase.zeroize());
        domain_id(answer?)
    }

    /// The domain id of a slot's card (anyone on the socket may ask).
    pub(super) fn domain_show(&self, slot: u64) -> Result<Option<Vec<u8>>, HsmError> {
        domain_of(self.slot(slot)?)
    }

    /// `backup export`: every token object, keys rewrapped by the card under
    /// the domain key, in one file tagged by the card.
    pub(super) fn backup_export(&self, app: AppKey, session: u64) -> Result<Vec<u8>, HsmError> {
        let view = self.view(app, session)?;
        if !view.user() {
            return Err(HsmError::UserNotLoggedIn);
        }
        let slot = self.slot(view.slot)?;
        let domain_id = domain_of(slot)?.ok_or(HsmError::Card(CardFailure::Fault(
            pci_driver_shim::command::CardFault::NoDomain,
        )))?;
        let objects: Vec<Object> = {
            let state = slot.read();
            state
                .objects
                .token_handles()
                .into_iter()
                .filter_map(|id| state.objects.get(id).cloned())
                .collect()
        };
        let mut backed_up = Vec::with_capacity(objects.len());
        for object in objects {
            let attributes = attributes::to_list(&object.attrs);
            let key = match &object.card_key {
                None => None,
                Some(card_key) => {
                    let request = CardRequest::ExportKey {
                        blob: card_key.blob.clone(),
                        policy: card_key.policy.clone(),
                        binding: binding(&attributes),
                    };
                    match slot.card.call(&request)? {
                        CardResponse::Bytes(blob) => Some(BackupKey {
                            blob,
                            policy: card_key.policy.to_aad(),
                        }),
                        _ => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
                    }
                }
            };
            backed_up.push(BackupObject { attributes, key });
        }
        let body = BackupBody {
            domain_id,
            source_serial: slot.card.info().serial,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            objects: backed_up,
        };
        let body = minicbor::to_vec(&body).expect("encoding into a Vec is infallible");
        let tag = match slot.card.call(&CardRequest::BackupTag {
            digest: sha256(&body),
            expected: None,
        })? {
            CardResponse::Bytes(tag) => tag,
            _ => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        };
        let file = minicbor::to_vec(BackupFile {
            magic: BACKUP_MAGIC.into(),
            version: BACKUP_VERSION,
            body,
            tag,
        })
        .expect("encoding into a Vec is infallible");
        if file.len() > MAX_FRAME - FRAME_MARGIN {
            return Err(HsmError::DataLenRange(file.len()));
        }
        Ok(file)
    }

    /// `backup import`: checks the file's tag on the card, then restores
    /// every object not already present (same class and CKA_ID, or
    /// CKA_LABEL without an id), keys rewrapped by the card under its own
    /// master key; all in one durable commit, or nothing.
    pub(super) fn backup_import(
        &self,
        app: AppKey,
        session: u64,
        file: &[u8],
    ) -> Result<(u64, Vec<SkippedObject>), HsmError> {
        let view = self.admin_view(app, session, Login::User)?;
        let slot = self.slot(view.slot)?;
        let (file, body) = BackupFile::parse(file).ok_or(HsmError::DataInvalid)?;
        // The tag decides; another domain's file fails it as a modified
        // one does (the CLI compares the domain ids first to say which).
        match slot.card.call(&CardRequest::BackupTag {
            digest: sha256(&file.body),
            expected: Some(file.tag.clone()),
        })? {
            CardResponse::Verified(true) => {}
            CardResponse::Verified(false) => return Err(HsmError::SignatureInvalid),
            _ => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        }
        let mut present: BTreeSet<(u64, Vec<u8>)> = {
            let state = slot.read();
            state
                .objects
                .token_handles()
                .into_iter()
                .filter_map(|id| state.objects.get(id).map(|o| identity(&o.attrs)))
                .collect()
        };
        let mut restored = Vec::new();
        let mut skipped = Vec::new();
        for object in body.objects {
            let attrs = attributes::from_list(&object.attributes);
            if attributes::flag(&attrs, CKA_TOKEN) != Some(true) {
                return Err(HsmError::DataInvalid);
            }
            let identity = identity(&attrs);
            if !present.insert(identity.clone()) {
                skipped.push(SkippedObject {
                    class: identity.0,
                    id: attrs.get(&CKA_ID).cloned().unwrap_or_default(),
                    label: attrs.get(&CKA_LABEL).cloned().unwrap_or_default(),
                });
                continue;
            }
            let id = self.allocate(slot, true);
            let card_key = match object.key {
                None => None,
                Some(key) => Some(Arc::new(restore_key(slot, key, &object.attributes, id)?)),
            };
            restored.push((
                id,
                Object {
                    attrs,
                    card_key,
                    owner: None,
                },
            ));
        }
        let count = restored.len() as u64;
        self.store_objects(&view, restored)?;
        Ok((count, skipped))
    }
}

/// The card rewraps one backed-up key under its master key for object `id`.
fn restore_key(
    slot: &Slot,
    key: BackupKey,
    attributes: &[Attribute],
    id: u64,
) -> Result<CardKey, HsmError> {
    let policy: KeyPolicy = minicbor::decode(&key.policy).map_err(|_| HsmError::DataInvalid)?;
    let request = CardRequest::ImportKey {
        domain_blob: key.blob,
        policy: policy.clone(),
        binding: binding(attributes),
        object_id: id,
    };
    match slot.card.call(&request)? {
        CardResponse::Bytes(blob) => Ok(CardKey {
            blob,
            policy: KeyPolicy {
                object_id: id,
                ..policy
            },
        }),
        _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
    }
}

/// What makes two objects "the same" for an import: class and CKA_ID, or
/// class and CKA_LABEL for objects without an id (data objects).
fn identity(attrs: &attributes::AttrMap) -> (u64, Vec<u8>) {
    let class = attributes::ulong(attrs, CKA_CLASS).unwrap_or(u64::MAX);
    let name = match attrs.get(&CKA_ID) {
        Some(id) if !id.is_empty() => [b"id:".as_slice(), id].concat(),
        _ => [
            b"label:".as_slice(),
            attrs.get(&CKA_LABEL).map(Vec::as_slice).unwrap_or_default(),
        ]
        .concat(),
    };
    (class, name)
}

/// The digest of an object's attributes that its key's domain blob binds.
fn binding(attributes: &[Attribute]) -> Vec<u8> {
    sha256(&minicbor::to_vec(attributes).expect("encoding into a Vec is infallible"))
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, bytes).as_ref().to_vec()
}

fn domain_of(slot: &Slot) -> Result<Option<Vec<u8>>, HsmError> {
    domain_id(slot.card.call(&CardRequest::DomainInfo)?)
}

fn domain_id(response: CardResponse) -> Result<Option<Vec<u8>>, HsmError> {
    match response {
        CardResponse::Domain { id } => Ok(id),
        _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
    }
}

fn wipe_create(request: CardRequest) {
    if let CardRequest::DomainCreate {
        mut passphrases, ..
    } = request
    {
        passphrases.iter_mut().for_each(Zeroize::zeroize);
    }
}

fn to_wire(s: CardShare) -> DomainShare {
    DomainShare {
        domain_id: s.domain_id,
        index: s.index,
        threshold: s.threshold,
        shares: s.shares,
        iterations: s.iterations,
        salt: s.salt,
        nonce: s.nonce,
        sealed: s.sealed,
    }
}

fn from_wire(s: &DomainShare) -> CardShare {
    CardShare {
        domain_id: s.domain_id.clone(),
        index: s.index,
        threshold: s.threshold,
        shares: s.shares,
        iterations: s.iterations,
        salt: s.salt.clone(),
        nonce: s.nonce.clone(),
        sealed: s.sealed.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(list: &[(u64, Vec<u8>)]) -> attributes::AttrMap {
        list.iter().cloned().collect()
    }

    #[test]
    fn identity_is_class_and_id_else_label() {
        let class = |c| mesign_proto::attr::ulong_value(c);
        let key = attrs(&[
            (CKA_CLASS, class(CKO_PRIVATE_KEY)),
            (CKA_ID, vec![1]),
            (CKA_LABEL, b"k".to_vec()),
        ]);
        let public = attrs(&[
            (CKA_CLASS, class(CKO_PUBLIC_KEY)),
            (CKA_ID, vec![1]),
            (CKA_LABEL, b"k".to_vec()),
        ]);
        let renamed = attrs(&[
            (CKA_CLASS, class(CKO_PRIVATE_KEY)),
            (CKA_ID, vec![1]),
            (CKA_LABEL, b"other".to_vec()),
        ]);
        assert_ne!(identity(&key), identity(&public));
        assert_eq!(identity(&key), identity(&renamed));
        let data = attrs(&[(CKA_CLASS, class(CKO_DATA)), (CKA_LABEL, b"d".to_vec())]);
        let empty_id = attrs(&[
            (CKA_CLASS, class(CKO_DATA)),
            (CKA_ID, vec![]),
            (CKA_LABEL, b"d".to_vec()),
        ]);
        assert_eq!(identity(&data), identity(&empty_id));
        // An id that happens to spell a label does not collide with it.
        let spelled = attrs(&[(CKA_CLASS, class(CKO_DATA)), (CKA_ID, b"d".to_vec())]);
        assert_ne!(identity(&data), identity(&spelled));
    }

    #[test]
    fn the_binding_covers_every_attribute() {
        let a = vec![Attribute {
            ty: CKA_LABEL,
            value: b"k".to_vec(),
        }];
        let mut b = a.clone();
        b[0].value = b"l".to_vec();
        assert_ne!(binding(&a), binding(&b));
        assert_eq!(binding(&a).len(), 32);
    }
}
