//! The cloning domain and backups, as the daemon serves them: who may ask
//! (the SO creates and joins domains; the user, who owns the keys, exports
//! and imports them), which objects go into a backup, and how a restore
//! lands in the token store. The card does the cryptography (see the
//! shim's `firmware/domain.rs`); keys pass through here only wrapped.
//!
//! Replication reuses the per-object rewrap of backups: the seams between
//! the token state and `crate::replication` (the hook a slot calls around
//! every commit of token objects, the export of one object, the apply of
//! a peer's change) and `CKA_UNIQUE_ID`, the identity of an object across
//! boxes, live here too.
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

use super::{Hsm, Slot, TokenChange};
use crate::attributes;
use crate::audit::Event;
use crate::card::CardFailure;
use crate::error::HsmError;
use crate::objects::Object;
use crate::replication::{ChangeHook, LocalChange};
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
            Ok((view.slot, answer?))
        });
        passphrases.iter_mut().for_each(Zeroize::zeroize);
        match answer? {
            (slot, CardResponse::DomainShares(shares)) => {
                if let Some(first) = shares.first() {
                    self.slot(slot)?.audit(
                        Some(app.pid),
                        Event::DomainCreated {
                            domain_id: first.domain_id.clone(),
                            shares: shares.len(),
                        },
                    );
                }
                Ok(shares.into_iter().map(to_wire).collect())
            }
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
            Ok((view.slot, answer?))
        });
        shares.iter_mut().for_each(|s| s.passphrase.zeroize());
        let (slot, answer) = answer?;
        let joined = domain_id(answer)?;
        if let Some(id) = &joined {
            let event = Event::DomainJoined {
                domain_id: id.clone(),
            };
            self.slot(slot)?.audit(Some(app.pid), event);
        }
        Ok(joined)
    }

    /// The public key of the domain's TLS CA (anyone may ask).
    pub(super) fn domain_ca_public(&self, slot: u64) -> Result<Vec<u8>, HsmError> {
        match self.slot(slot)?.card.call(&CardRequest::DomainCaPublic)? {
            CardResponse::Bytes(public) => Ok(public),
            _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        }
    }

    /// `domain tls-cert`: the SO has the card sign a certificate. Box
    /// certificates may replicate objects into every box of the domain,
    /// so issuing them is the SO's, like joining the domain.
    pub(super) fn domain_ca_sign(
        &self,
        app: AppKey,
        session: u64,
        tbs: Vec<u8>,
    ) -> Result<Vec<u8>, HsmError> {
        let view = self.admin_view(app, session, Login::So)?;
        let slot = self.slot(view.slot)?;
        let tbs_sha256 = sha256(&tbs);
        match slot.card.call(&CardRequest::DomainCaSign { tbs })? {
            CardResponse::Bytes(signature) => {
                slot.audit(Some(app.pid), Event::TlsCertificateSigned { tbs_sha256 });
                Ok(signature)
            }
            _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        }
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
            backed_up.push(slot.export_object(&object)?);
        }
        let exported = backed_up.len();
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
        slot.audit(Some(app.pid), Event::BackupExported { objects: exported });
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
        // An object is there already if its class and CKA_ID (or label)
        // are, or its CKA_UNIQUE_ID is (the same object renamed since).
        let (mut present, mut present_unique): (BTreeSet<(u64, Vec<u8>)>, BTreeSet<String>) = {
            let state = slot.read();
            let objects: Vec<&Object> = state
                .objects
                .token_handles()
                .into_iter()
                .filter_map(|id| state.objects.get(id))
                .collect();
            (
                objects.iter().map(|o| identity(&o.attrs)).collect(),
                objects.iter().filter_map(|o| unique_id(&o.attrs)).collect(),
            )
        };
        let mut restored = Vec::new();
        let mut skipped = Vec::new();
        for object in body.objects {
            let attrs = attributes::from_list(&object.attributes);
            if attributes::flag(&attrs, CKA_TOKEN) != Some(true) {
                return Err(HsmError::DataInvalid);
            }
            let identity = identity(&attrs);
            let new_unique = unique_id(&attrs).is_none_or(|u| present_unique.insert(u));
            if !present.insert(identity.clone()) || !new_unique {
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
        let event = Event::BackupImported {
            restored: count,
            skipped: skipped.len(),
        };
        slot.audit(Some(app.pid), event);
        Ok((count, skipped))
    }
}

/// A slot's replication hook, set once when the daemon starts replicating.
pub(crate) struct Replication {
    index: u64,
    hook: Arc<dyn ChangeHook>,
}

impl Hsm {
    /// Has every slot report its token-object changes to `hook`.
    pub fn start_replication(&self, hook: Arc<dyn ChangeHook>) {
        for (index, slot) in self.slots.iter().enumerate() {
            let _ = slot.replication.set(Replication {
                index: index as u64,
                hook: hook.clone(),
            });
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Every token object of `slot` with its `CKA_UNIQUE_ID`.
    pub fn replica_objects(&self, slot: u64) -> Result<Vec<(String, Object)>, HsmError> {
        let state = self.slot(slot)?.read();
        Ok(state
            .objects
            .token_handles()
            .into_iter()
            .filter_map(|id| state.objects.get(id))
            .filter_map(|o| unique_id(&o.attrs).map(|u| (u, o.clone())))
            .collect())
    }

    /// The token object of `slot` whose `CKA_UNIQUE_ID` is `unique`.
    pub fn replica_object(&self, slot: u64, unique: &str) -> Result<Option<Object>, HsmError> {
        Ok(self
            .slot(slot)?
            .find_unique(unique)
            .map(|(_, object)| object))
    }

    /// One object as it travels to a peer (its key rewrapped by the card
    /// under the domain key).
    pub fn replica_export(&self, slot: u64, object: &Object) -> Result<BackupObject, HsmError> {
        self.slot(slot)?.export_object(object)
    }

    /// The card's tag over one replication change (`digest`: what
    /// `replication::change_digest` gives).
    pub fn replica_tag(&self, slot: u64, digest: Vec<u8>) -> Result<Vec<u8>, HsmError> {
        let request = CardRequest::ReplicaTag {
            digest,
            expected: None,
        };
        match self.slot(slot)?.card.call(&request)? {
            CardResponse::Bytes(tag) => Ok(tag),
            _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        }
    }

    /// Whether a peer's change carries the tag of a card of this card's
    /// domain.
    pub fn replica_tag_verifies(
        &self,
        slot: u64,
        digest: Vec<u8>,
        tag: Vec<u8>,
    ) -> Result<bool, HsmError> {
        let request = CardRequest::ReplicaTag {
            digest,
            expected: Some(tag),
        };
        match self.slot(slot)?.card.call(&request)? {
            CardResponse::Verified(verified) => Ok(verified),
            _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        }
    }

    /// Applies a peer's change (its card tag already verified) of the
    /// object `unique_id`: `None` deletes it; otherwise it is created or
    /// replaced, a key always rewrapped by this card from the domain blob,
    /// which binds the new attributes (the old blob never stays under new
    /// attributes). A change of an object this box holds must pass the
    /// rules of a local C_SetAttributeValue by the user
    /// ([`check_replica_change`]). Not replicated back.
    pub fn replica_apply(
        &self,
        slot: u64,
        unique: &str,
        object: Option<BackupObject>,
    ) -> Result<(), HsmError> {
        let slot = self.slot(slot)?;
        let existing = slot.find_unique(unique);
        let Some(object) = object else {
            return match existing {
                None => Ok(()),
                Some((id, _)) => slot.commit(TokenChange {
                    delete: vec![id],
                    from_peer: true,
                    ..TokenChange::default()
                }),
            };
        };
        let attrs = attributes::from_list(&object.attributes);
        if attributes::flag(&attrs, CKA_TOKEN) != Some(true)
            || unique_id(&attrs).as_deref() != Some(unique)
        {
            return Err(HsmError::DataInvalid);
        }
        let id = match &existing {
            Some((id, old)) => {
                if old.card_key.is_some() != object.key.is_some() {
                    return Err(HsmError::DataInvalid);
                }
                check_replica_change(&old.attrs, &attrs, old.card_key.is_some())?;
                *id
            }
            None => self.allocate(slot, true),
        };
        let card_key = match object.key {
            None => None,
            Some(key) => {
                let restored = restore_key(slot, key, &object.attributes, id)?;
                // The policy is the key's for life, on every box.
                let old_policy = existing.as_ref().and_then(|(_, o)| o.card_key.as_ref());
                if old_policy.is_some_and(|old| old.policy != restored.policy) {
                    return Err(HsmError::DataInvalid);
                }
                Some(Arc::new(restored))
            }
        };
        slot.commit(TokenChange {
            record: Some(Box::new(move |r| {
                r.next_object_id = r.next_object_id.max(id + 1)
            })),
            put: vec![(
                id,
                Object {
                    attrs,
                    card_key,
                    owner: None,
                },
            )],
            from_peer: true,
            ..TokenChange::default()
        })
    }

    /// Appends a replication event to `slot`'s audit log.
    pub fn replica_audit(&self, slot: u64, event: Event) {
        if let Ok(slot) = self.slot(slot) {
            slot.audit(None, event);
        }
    }
}

impl Slot {
    /// The id and a copy of the token object whose `CKA_UNIQUE_ID` is
    /// `unique`.
    fn find_unique(&self, unique: &str) -> Option<(u64, Object)> {
        let state = self.read();
        state.objects.token_handles().into_iter().find_map(|id| {
            let o = state.objects.get(id)?;
            let found = o.attrs.get(&CKA_UNIQUE_ID).map(Vec::as_slice) == Some(unique.as_bytes());
            found.then(|| (id, o.clone()))
        })
    }

    /// One token object as a backup or a peer receives it.
    fn export_object(&self, object: &Object) -> Result<BackupObject, HsmError> {
        let attributes = attributes::to_list(&object.attrs);
        let key = match &object.card_key {
            None => None,
            Some(card_key) => {
                let request = CardRequest::ExportKey {
                    blob: card_key.blob.clone(),
                    policy: card_key.policy.clone(),
                    binding: binding(&attributes),
                };
                match self.card.call(&request)? {
                    CardResponse::Bytes(blob) => Some(BackupKey {
                        blob,
                        policy: card_key.policy.to_aad(),
                    }),
                    _ => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
                }
            }
        };
        Ok(BackupObject { attributes, key })
    }

    /// Before a local change of token objects commits: what it does to
    /// each object, told to the replication hook, which may refuse it
    /// (mode "both" with a peer down). Changes from peers, and the
    /// clearing of a token (C_InitToken, local to its box), are not
    /// replicated.
    pub(super) fn replicate_before(
        &self,
        change: &TokenChange,
    ) -> Result<Option<Vec<LocalChange>>, HsmError> {
        let Some(replication) = self.replication.get() else {
            return Ok(None);
        };
        if change.from_peer || (change.put.is_empty() && change.delete.is_empty()) {
            return Ok(None);
        }
        let mut changes = Vec::new();
        for (_, object) in &change.put {
            if let Some(unique) = unique_id(&object.attrs).filter(|_| object.is_token()) {
                changes.push(LocalChange {
                    unique_id: unique,
                    object: Some(object.clone()),
                });
            }
        }
        {
            let state = self.read();
            for id in &change.delete {
                if let Some(unique) = state.objects.get(*id).and_then(|o| unique_id(&o.attrs)) {
                    changes.push(LocalChange {
                        unique_id: unique,
                        object: None,
                    });
                }
            }
        }
        if changes.is_empty() {
            return Ok(None);
        }
        replication
            .hook
            .before_commit(replication.index, &changes)?;
        Ok(Some(changes))
    }

    /// After that change committed.
    pub(super) fn replicate_after(&self, changes: Option<Vec<LocalChange>>) {
        if let (Some(replication), Some(changes)) = (self.replication.get(), changes) {
            replication.hook.after_commit(replication.index, changes);
        }
    }

    /// Gives every token object that predates `CKA_UNIQUE_ID` one, durably
    /// (at start, before any client or peer can see them).
    pub(super) fn assign_missing_unique_ids(&self) -> Result<(), HsmError> {
        let missing: Vec<(u64, Object)> = {
            let state = self.read();
            state
                .objects
                .token_handles()
                .into_iter()
                .filter_map(|id| state.objects.get(id).map(|o| (id, o.clone())))
                .filter(|(_, o)| unique_id(&o.attrs).is_none())
                .map(|(id, mut o)| {
                    assign_unique_id(&mut o.attrs);
                    (id, o)
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        self.commit(TokenChange {
            put: missing,
            ..TokenChange::default()
        })
    }
}

/// `CKA_UNIQUE_ID` (PKCS#11 3.0 §4.4.1): assigned by the token when an
/// object is made, never changed, kept by backups and replication so that
/// one object has one identity on every box: 16 random bytes, hex.
pub(super) fn assign_unique_id(attrs: &mut attributes::AttrMap) {
    if attrs.contains_key(&CKA_UNIQUE_ID) {
        return;
    }
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    attrs.insert(CKA_UNIQUE_ID, hex.into_bytes());
}

/// An object's `CKA_UNIQUE_ID`, if it has one.
pub fn unique_id(attrs: &attributes::AttrMap) -> Option<String> {
    attrs
        .get(&CKA_UNIQUE_ID)
        .and_then(|v| String::from_utf8(v.clone()).ok())
}

/// A peer's new attributes `next` for an object this box holds as
/// `current` pass only as a local C_SetAttributeValue by the user would
/// (the SO's CKA_TRUSTED marks are each box's own): nothing fixed (class,
/// key type, CKA_PRIVATE, CKA_UNIQUE_ID, ...) changes, sensitivity,
/// extractability and CKA_WRAP_WITH_TRUSTED only tighten, the wrap and
/// unwrap templates stay, and no attribute disappears.
fn check_replica_change(
    current: &attributes::AttrMap,
    next: &attributes::AttrMap,
    card_key: bool,
) -> Result<(), HsmError> {
    if let Some(&gone) = current.keys().find(|ty| !next.contains_key(ty)) {
        return Err(HsmError::AttributeReadOnly(gone));
    }
    let changes: attributes::AttrMap = next
        .iter()
        .filter(|&(ty, value)| current.get(ty) != Some(value))
        .map(|(&ty, value)| (ty, value.clone()))
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    attributes::set_attributes(current, &changes, card_key, false).map(|_| ())
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

    use mesign_proto::attr::{bool_value as b, ulong_value as u};
    use pci_driver_shim::command::{Curve, KeySpec};

    /// A token EC private key as a box holds it.
    fn key_attrs() -> attributes::AttrMap {
        attrs(&[
            (CKA_CLASS, u(CKO_PRIVATE_KEY)),
            (CKA_KEY_TYPE, u(CKK_EC)),
            (CKA_TOKEN, b(true)),
            (CKA_PRIVATE, b(true)),
            (CKA_MODIFIABLE, b(true)),
            (CKA_SENSITIVE, b(true)),
            (CKA_EXTRACTABLE, b(false)),
            (CKA_WRAP_WITH_TRUSTED, b(true)),
            (CKA_ALWAYS_AUTHENTICATE, b(false)),
            (CKA_SIGN, b(true)),
            (CKA_LABEL, b"k".to_vec()),
            (CKA_UNIQUE_ID, b"0011".to_vec()),
        ])
    }

    #[test]
    fn a_peer_may_not_loosen_an_object_this_box_holds() {
        let key = key_attrs();
        let with = |ty, value: Vec<u8>| {
            let mut next = key.clone();
            next.insert(ty, value);
            next
        };
        // A rename, or a tightening, passes; so does no change at all.
        check_replica_change(&key, &key, true).unwrap();
        check_replica_change(&key, &with(CKA_LABEL, b"renamed".to_vec()), true).unwrap();
        check_replica_change(&key, &with(CKA_ALWAYS_AUTHENTICATE, b(true)), true).unwrap();
        for (ty, value) in [
            (CKA_PRIVATE, b(false)),
            (CKA_SENSITIVE, b(false)),
            (CKA_EXTRACTABLE, b(true)),
            (CKA_WRAP_WITH_TRUSTED, b(false)),
            (CKA_TRUSTED, b(true)),
            (CKA_CLASS, u(CKO_PUBLIC_KEY)),
            (CKA_KEY_TYPE, u(CKK_RSA)),
            (CKA_UNIQUE_ID, b"0022".to_vec()),
            (CKA_SIGN, b(false)),
            (CKA_UNWRAP_TEMPLATE, Vec::new()),
        ] {
            let refused = check_replica_change(&key, &with(ty, value), true);
            assert!(refused.is_err(), "attribute {ty:#x} changed");
        }
        // Dropping CKA_ALWAYS_AUTHENTICATE (or anything) is no way round.
        let mut dropped = key.clone();
        dropped.remove(&CKA_ALWAYS_AUTHENTICATE);
        assert!(check_replica_change(&key, &dropped, true).is_err());
        // A non-modifiable object does not change at all.
        let fixed = with(CKA_MODIFIABLE, b(false));
        let mut renamed = fixed.clone();
        renamed.insert(CKA_LABEL, b"x".to_vec());
        assert!(check_replica_change(&fixed, &renamed, true).is_err());
    }

    /// What `Replicator::apply` hands on once a change's card tag
    /// verified: the attribute rules still hold, and a key's change must
    /// bring its domain blob for this card to rewrap.
    #[test]
    fn a_tagged_change_still_cannot_loosen_a_key_or_keep_its_old_blob() {
        let dir = tempfile::tempdir().unwrap();
        let card = Arc::new(crate::card::fake::FakeCard::default());
        let slot = Slot::open(card.clone(), &dir.path().join("slot-0/token.redb")).unwrap();
        let hsm = Hsm::new(super::super::PinPolicy::default(), vec![slot]);
        let key = key_attrs();
        let policy = KeyPolicy {
            object_id: 5,
            spec: KeySpec::Ec(Curve::P256),
            sign: true,
            decrypt: false,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            secret: None,
        };
        let held = Object {
            attrs: key.clone(),
            card_key: Some(Arc::new(CardKey {
                blob: vec![1, 2, 3],
                policy: policy.clone(),
            })),
            owner: None,
        };
        let put = TokenChange {
            put: vec![(5, held)],
            ..TokenChange::default()
        };
        hsm.slot(0).unwrap().commit(put).unwrap();
        let travelling = |ty, value: Vec<u8>, with_key: bool| {
            let mut next = key.clone();
            next.insert(ty, value);
            Some(BackupObject {
                attributes: attributes::to_list(&next),
                key: with_key.then(|| BackupKey {
                    blob: vec![9; 40],
                    policy: policy.to_aad(),
                }),
            })
        };
        for (ty, value) in [
            (CKA_PRIVATE, b(false)),
            (CKA_SENSITIVE, b(false)),
            (CKA_EXTRACTABLE, b(true)),
            (CKA_TRUSTED, b(true)),
        ] {
            let refused = hsm.replica_apply(0, "0011", travelling(ty, value, true));
            assert!(
                matches!(
                    refused,
                    Err(HsmError::AttributeReadOnly(_) | HsmError::AttributeTypeInvalid(_))
                ),
                "attribute {ty:#x}: {refused:?}"
            );
        }
        assert!(
            card.requests.lock().unwrap().is_empty(),
            "refused before the card is asked"
        );
        // A rename without the key would keep the old blob under the new
        // attributes: refused.
        let renamed = hsm.replica_apply(0, "0011", travelling(CKA_LABEL, b"new".to_vec(), false));
        assert!(matches!(renamed, Err(HsmError::DataInvalid)), "{renamed:?}");
        // With the key, the card rewraps it against the new attributes
        // (this fake card is in no domain, so it refuses).
        let renamed = hsm.replica_apply(0, "0011", travelling(CKA_LABEL, b"new".to_vec(), true));
        assert!(renamed.is_err());
        assert!(card
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| matches!(r, CardRequest::ImportKey { object_id: 5, .. })));
        let now = hsm.replica_object(0, "0011").unwrap().unwrap();
        assert_eq!(now.attrs, key, "nothing changed");
        assert_eq!(now.card_key.unwrap().blob, [1, 2, 3]);
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
