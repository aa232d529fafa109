//! Replication: the boxes of one domain keep their token objects in step.
//!
//! Every commit that creates, changes or deletes token objects on a slot
//! (C_CreateObject, C_CopyObject, C_GenerateKey(Pair), C_UnwrapKey,
//! C_DeriveKey, C_SetAttributeValue, C_DestroyObject, certificate import,
//! backup import) calls this module's [`ChangeHook`] around it. Each object
//! is known across boxes by its `CKA_UNIQUE_ID`; each change raises its
//! version ([`versions`]). Objects travel as in a backup: attributes in
//! clear, keys as blobs the card rewraps under the domain key with a digest
//! of the attributes bound; the receiving card rewraps them under its own
//! master key. Session objects and C_InitToken are local to a box.
//!
//! A box certificate only opens the connection: every change carries a
//! tag its sending card computes under a key derived from the domain key
//! over the version, the attributes and the key blob ([`change_digest`]),
//! and the receiving card verifies it before anything is applied, so a
//! stolen TLS key without a card of the domain cannot forge changes. A
//! change of an object this box holds must also pass the rules a local
//! C_SetAttributeValue by the user would (`Hsm::replica_apply`); a refused
//! change is audited as `replication_refused`.
//!
//! Modes (`[replication] mode`): **async** acknowledges at once and sends
//! in the background; **both** sends before the change commits and fails
//! the call with CKR_DEVICE_ERROR, without making the change, when a peer
//! does not acknowledge it.
//!
//! Catch-up: one worker thread per peer keeps a connection; on every
//! (re)connect it asks the peer for its versions of all objects and sends
//! each object of which this box holds a newer version, then sends changes
//! as they commit. Two boxes changing one object concurrently: the higher
//! version wins, and at equal versions the higher digest (a deletion beats
//! any change), the same way on both boxes; the losing change is logged as
//! refused in the audit log of the box that refused it.
//!
//! Peers are other daemons over mutual TLS ([`crate::tls`]); only box
//! certificates may send the replication requests ([`Replicator`] serves
//! them as [`ReplicaService`]).

pub mod peer;
pub mod versions;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use aws_lc_rs::digest;
use mesign_proto::backup::BackupObject;
use mesign_proto::{ReplicaChange, ReplicaVersion, ReplyBody, RequestBody};
use rustls::ClientConfig;

use crate::attributes;
use crate::audit::Event;
use crate::config::{ReplicationConfig, ReplicationMode};
use crate::error::HsmError;
use crate::hsm::Hsm;
use crate::objects::Object;
use crate::server::ReplicaService;
use peer::{PeerConnection, PeerError};
use versions::{supersedes, Versions, DELETED_DIGEST};

/// The longest wait between attempts to reach a peer that is down.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// A connected worker re-checks everything this often, in case a change
/// was missed (e.g. a commit that failed after its version was raised).
const RESYNC: Duration = Duration::from_secs(30);
/// How far a peer's version may run ahead of ours: a box makes far fewer
/// changes of one object than this, and the counter must never near its
/// end (a tombstone of an object this box never held is taken as is).
const MAX_VERSION_STEP: u64 = 1 << 32;

/// One object's part of a local commit: its new state, `None` if deleted.
pub struct LocalChange {
    pub unique_id: String,
    pub object: Option<Object>,
}

/// What a slot calls around every commit of token objects.
pub trait ChangeHook: Send + Sync {
    /// Before the commit; an error cancels it (mode "both").
    fn before_commit(&self, slot: u64, changes: &[LocalChange]) -> Result<(), HsmError>;
    /// After the commit.
    fn after_commit(&self, slot: u64, changes: Vec<LocalChange>);
}

/// The replication of one daemon.
pub struct Replicator {
    hsm: Weak<Hsm>,
    versions: Versions,
    mode: ReplicationMode,
    peers: Vec<Arc<Peer>>,
    /// Serialises reading and raising versions.
    versions_lock: Mutex<()>,
}

struct Peer {
    address: String,
    client: Arc<ClientConfig>,
    connection: Mutex<Option<PeerConnection>>,
    pending: Mutex<BTreeSet<(u64, String)>>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// In the background, a peer refusing one object (its card cannot import
/// it, say) is logged (the peer's audit log says why) and does not stop
/// the others; only a broken connection does.
fn tolerate_refusal(peer: &Peer, sent: Result<(), PeerError>) -> Result<(), PeerError> {
    match sent {
        Err(PeerError::Refused(rv)) => {
            tracing::warn!(peer = %peer.address, rv = format!("{rv:#x}"), "peer refused a change");
            Ok(())
        }
        other => other,
    }
}

/// SHA-256 of an object's attributes: what makes two versions equal.
fn digest_of(object: &Object) -> Vec<u8> {
    let list = attributes::to_list(&object.attrs);
    let bytes = minicbor::to_vec(&list).expect("encoding into a Vec is infallible");
    digest::digest(&digest::SHA256, &bytes).as_ref().to_vec()
}

fn digest_of_backup(object: &BackupObject) -> Vec<u8> {
    let list = attributes::to_list(&attributes::from_list(&object.attributes));
    let bytes = minicbor::to_vec(&list).expect("encoding into a Vec is infallible");
    digest::digest(&digest::SHA256, &bytes).as_ref().to_vec()
}

/// The version after `old` (1 for a new object); `None` at the end of the
/// counter, which only a peer could have pushed us to.
fn next_version(old: Option<&ReplicaVersion>) -> Option<u64> {
    old.map_or(Some(1), |o| o.version.checked_add(1))
}

/// SHA-256 of what a change's card tag binds: its version (unique id,
/// number, attribute digest, deletion) and the object as it travels
/// (every attribute, the key's domain blob and policy).
pub fn change_digest(version: &ReplicaVersion, object: &Option<BackupObject>) -> Vec<u8> {
    let bytes = minicbor::to_vec((version, object)).expect("encoding into a Vec is infallible");
    digest::digest(&digest::SHA256, &bytes).as_ref().to_vec()
}

fn store_error(e: redb::Error) -> HsmError {
    tracing::error!(error = %e, "replication state");
    HsmError::Internal
}

impl Replicator {
    /// Opens the replication state in `state_dir`, records the versions of
    /// objects changed while replication was off, starts one worker per
    /// peer and hooks into every slot of `hsm`.
    pub fn start(
        config: &ReplicationConfig,
        client: Arc<ClientConfig>,
        hsm: &Arc<Hsm>,
        state_dir: &Path,
    ) -> Result<Arc<Replicator>, redb::Error> {
        let versions = Versions::open(&state_dir.join("replication.redb"))?;
        for slot in 0..hsm.slot_count() as u64 {
            let known = versions.all(slot)?;
            let objects = hsm.replica_objects(slot).unwrap_or_default();
            let changed: Vec<ReplicaVersion> = objects
                .iter()
                .filter_map(|(unique_id, object)| {
                    let digest = digest_of(object);
                    let old = known.get(unique_id);
                    if old.map(|o| (&o.digest, o.deleted)) == Some((&digest, false)) {
                        return None;
                    }
                    Some(ReplicaVersion {
                        unique_id: unique_id.clone(),
                        version: next_version(old)?,
                        digest,
                        deleted: false,
                    })
                })
                .collect();
            versions.put(slot, &changed)?;
        }
        let replicator = Arc::new(Replicator {
            hsm: Arc::downgrade(hsm),
            versions,
            mode: config.mode,
            peers: config
                .peers
                .iter()
                .map(|address| {
                    Arc::new(Peer {
                        address: address.clone(),
                        client: client.clone(),
                        connection: Mutex::new(None),
                        pending: Mutex::new(BTreeSet::new()),
                        wake: Condvar::new(),
                    })
                })
                .collect(),
            versions_lock: Mutex::new(()),
        });
        for peer in &replicator.peers {
            let (worker, peer) = (replicator.clone(), peer.clone());
            std::thread::Builder::new()
                .name("replication".into())
                .spawn(move || worker.run(&peer))
                .expect("spawning a thread");
        }
        hsm.start_replication(replicator.clone());
        tracing::info!(peers = ?config.peers, mode = ?config.mode, "replication started");
        Ok(replicator)
    }

    fn hsm(&self) -> Result<Arc<Hsm>, HsmError> {
        self.hsm.upgrade().ok_or(HsmError::Internal)
    }

    /// A peer's worker: (re)connects, catches the peer up, then sends
    /// changes as they commit, until the daemon exits.
    fn run(&self, peer: &Peer) {
        let mut backoff = Duration::from_millis(50);
        let mut reachable = true;
        loop {
            if let Err(e) = self.catch_up(peer) {
                if reachable {
                    tracing::warn!(peer = %peer.address, error = %e, "peer not reachable; retrying");
                }
                reachable = false;
                *lock(&peer.connection) = None;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            if !reachable {
                tracing::info!(peer = %peer.address, "peer caught up");
            }
            reachable = true;
            backoff = Duration::from_millis(50);
            loop {
                let batch: Vec<(u64, String)> = {
                    let pending = lock(&peer.pending);
                    let (mut pending, timeout) = peer
                        .wake
                        .wait_timeout_while(pending, RESYNC, |p| p.is_empty())
                        .unwrap_or_else(|e| e.into_inner());
                    if timeout.timed_out() {
                        break;
                    }
                    std::mem::take(&mut *pending).into_iter().collect()
                };
                let sent = batch.iter().try_for_each(|(slot, unique_id)| {
                    tolerate_refusal(peer, self.send_current(peer, *slot, unique_id))
                });
                if let Err(e) = sent {
                    tracing::warn!(peer = %peer.address, error = %e, "replication interrupted");
                    *lock(&peer.connection) = None;
                    break;
                }
            }
        }
    }

    /// Sends the peer every object of which this box holds a newer version.
    fn catch_up(&self, peer: &Peer) -> Result<(), PeerError> {
        let Ok(hsm) = self.hsm() else {
            return Ok(());
        };
        for slot in 0..hsm.slot_count() as u64 {
            let theirs = match self.call(peer, RequestBody::ReplicaVersions { slot })? {
                ReplyBody::ReplicaVersions(list) => list,
                _ => return Err(PeerError::Unexpected),
            };
            let theirs: std::collections::BTreeMap<String, ReplicaVersion> = theirs
                .into_iter()
                .map(|v| (v.unique_id.clone(), v))
                .collect();
            let ours = self.versions.all(slot).unwrap_or_default();
            for (unique_id, version) in ours {
                let known = theirs.get(&unique_id);
                if supersedes(&version, known) && !(version.deleted && known.is_none()) {
                    tolerate_refusal(peer, self.send_current(peer, slot, &unique_id))?;
                }
            }
        }
        Ok(())
    }

    /// Sends the current state of one object, if its recorded version
    /// describes it (a change whose commit is still under way is sent when
    /// it commits).
    fn send_current(&self, peer: &Peer, slot: u64, unique_id: &str) -> Result<(), PeerError> {
        let Ok(hsm) = self.hsm() else {
            return Ok(());
        };
        let Ok(Some(version)) = self.versions.get(slot, unique_id) else {
            return Ok(());
        };
        let object = hsm.replica_object(slot, unique_id).ok().flatten();
        let object = match (version.deleted, object) {
            (true, None) => None,
            (false, Some(object)) if digest_of(&object) == version.digest => {
                match hsm.replica_export(slot, &object) {
                    Ok(exported) => Some(exported),
                    Err(e) => {
                        tracing::warn!(error = %e, unique_id, "cannot export for replication");
                        return Ok(());
                    }
                }
            }
            _ => return Ok(()),
        };
        let change = match Self::tagged(&hsm, slot, version, object) {
            Ok(change) => change,
            Err(e) => {
                tracing::warn!(error = %e, unique_id, "cannot tag for replication");
                return Ok(());
            }
        };
        self.send(peer, slot, change)
    }

    /// A change as it travels, tagged by this box's card.
    fn tagged(
        hsm: &Hsm,
        slot: u64,
        version: ReplicaVersion,
        object: Option<BackupObject>,
    ) -> Result<ReplicaChange, HsmError> {
        let tag = hsm.replica_tag(slot, change_digest(&version, &object))?;
        Ok(ReplicaChange {
            version,
            object,
            tag,
        })
    }

    fn send(&self, peer: &Peer, slot: u64, change: ReplicaChange) -> Result<(), PeerError> {
        let version = change.version.clone();
        match self.call(
            peer,
            RequestBody::ReplicaApply {
                slot,
                change: Box::new(change),
            },
        )? {
            ReplyBody::ReplicaApplied(applied) => {
                if applied {
                    if let Ok(hsm) = self.hsm() {
                        let event = Event::ReplicationSent {
                            peer: peer.address.clone(),
                            unique_id: version.unique_id,
                            version: version.version,
                            deleted: version.deleted,
                        };
                        hsm.replica_audit(slot, event);
                    }
                }
                Ok(())
            }
            _ => Err(PeerError::Unexpected),
        }
    }

    /// One request to `peer`, connecting first if needed; a failed
    /// connection is dropped.
    fn call(&self, peer: &Peer, body: RequestBody) -> Result<ReplyBody, PeerError> {
        let mut connection = lock(&peer.connection);
        if connection.is_none() {
            *connection = Some(PeerConnection::open(&peer.address, peer.client.clone())?);
            tracing::info!(peer = %peer.address, "connected to peer");
        }
        let answer = connection
            .as_mut()
            .expect("connected just above")
            .call(body);
        if matches!(
            answer,
            Err(PeerError::Io(_) | PeerError::Frame(_) | PeerError::Tls(_))
        ) {
            *connection = None;
        }
        answer
    }

    /// The versions a local change raises its objects to.
    fn next_versions(
        &self,
        slot: u64,
        changes: &[LocalChange],
    ) -> Result<Vec<ReplicaVersion>, HsmError> {
        changes
            .iter()
            .map(|change| {
                let old = self.versions.get(slot, &change.unique_id).ok().flatten();
                Ok(ReplicaVersion {
                    unique_id: change.unique_id.clone(),
                    version: next_version(old.as_ref()).ok_or(HsmError::Internal)?,
                    digest: change
                        .object
                        .as_ref()
                        .map_or(DELETED_DIGEST.to_vec(), digest_of),
                    deleted: change.object.is_none(),
                })
            })
            .collect()
    }

    /// Mode "both": every peer applies the changes now, or none is made
    /// here. A peer that already holds a newer version acknowledges too
    /// (its version wins on both boxes).
    fn send_to_all(
        &self,
        slot: u64,
        changes: &[LocalChange],
        versions: &[ReplicaVersion],
    ) -> Result<(), HsmError> {
        let hsm = self.hsm()?;
        let mut outgoing = Vec::with_capacity(changes.len());
        for (change, version) in changes.iter().zip(versions) {
            let object = match &change.object {
                None => None,
                Some(object) => Some(hsm.replica_export(slot, object)?),
            };
            outgoing.push(Self::tagged(&hsm, slot, version.clone(), object)?);
        }
        let mut failed = 0;
        for peer in &self.peers {
            let sent = outgoing
                .iter()
                .try_for_each(|change| self.send(peer, slot, change.clone()));
            if let Err(e) = sent {
                tracing::warn!(peer = %peer.address, error = %e, "peer did not acknowledge; change refused");
                failed += 1;
            }
        }
        if failed > 0 {
            return Err(HsmError::PeersUnavailable(failed));
        }
        Ok(())
    }
}

impl ChangeHook for Replicator {
    fn before_commit(&self, slot: u64, changes: &[LocalChange]) -> Result<(), HsmError> {
        if self.mode == ReplicationMode::Async {
            // One lock for reading and raising, so that two changes of one
            // object on this box never get the same version.
            let _guard = lock(&self.versions_lock);
            let versions = self.next_versions(slot, changes)?;
            return self.versions.put(slot, &versions).map_err(store_error);
        }
        // Not held across the network: a peer applying a change here in
        // the meantime must not wait for this box's peers.
        let versions = {
            let _guard = lock(&self.versions_lock);
            self.next_versions(slot, changes)?
        };
        self.send_to_all(slot, changes, &versions)?;
        let _guard = lock(&self.versions_lock);
        self.versions.put(slot, &versions).map_err(store_error)
    }

    fn after_commit(&self, slot: u64, changes: Vec<LocalChange>) {
        if self.mode == ReplicationMode::Both {
            return;
        }
        for peer in &self.peers {
            let mut pending = lock(&peer.pending);
            for change in &changes {
                pending.insert((slot, change.unique_id.clone()));
            }
            peer.wake.notify_one();
        }
    }
}

impl ReplicaService for Replicator {
    fn serve(&self, body: RequestBody) -> Result<ReplyBody, HsmError> {
        match body {
            RequestBody::ReplicaVersions { slot } => {
                let all = self.versions.all(slot).map_err(store_error)?;
                Ok(ReplyBody::ReplicaVersions(all.into_values().collect()))
            }
            RequestBody::ReplicaApply { slot, change } => {
                self.apply(slot, *change).map(ReplyBody::ReplicaApplied)
            }
            _ => Err(HsmError::NotAPeer),
        }
    }
}

impl Replicator {
    /// A peer's change: applied if its card tag verifies on this box's
    /// card and it supersedes what this box holds.
    fn apply(&self, slot: u64, change: ReplicaChange) -> Result<bool, HsmError> {
        let hsm = self.hsm()?;
        let ReplicaChange {
            version,
            object,
            tag,
        } = change;
        let refuse = |reason: &str| {
            let event = Event::ReplicationRefused {
                unique_id: version.unique_id.clone(),
                version: version.version,
                reason: reason.into(),
            };
            hsm.replica_audit(slot, event);
        };
        let expected = object
            .as_ref()
            .map_or(DELETED_DIGEST.to_vec(), digest_of_backup);
        if version.deleted != object.is_none() || version.digest != expected {
            refuse("the version does not describe the object");
            return Err(HsmError::DataInvalid);
        }
        // Before anything else: only a card of the domain makes changes.
        if !hsm.replica_tag_verifies(slot, change_digest(&version, &object), tag)? {
            refuse("the change's card tag does not verify");
            return Err(HsmError::SignatureInvalid);
        }
        let _guard = lock(&self.versions_lock);
        let ours = self
            .versions
            .get(slot, &version.unique_id)
            .map_err(store_error)?;
        let ceiling = ours
            .as_ref()
            .map_or(0, |o| o.version)
            .saturating_add(MAX_VERSION_STEP);
        if version.version > ceiling && !(version.deleted && ours.is_none()) {
            refuse("the version runs too far ahead of this box's");
            return Err(HsmError::DataInvalid);
        }
        if !supersedes(&version, ours.as_ref()) {
            if ours.as_ref() != Some(&version) {
                let event = Event::ReplicationRefused {
                    unique_id: version.unique_id.clone(),
                    version: version.version,
                    reason: "this box holds a newer version".into(),
                };
                hsm.replica_audit(slot, event);
            }
            return Ok(false);
        }
        if let Err(e) = hsm.replica_apply(slot, &version.unique_id, object) {
            refuse(&e.to_string());
            return Err(e);
        }
        self.versions
            .put(slot, std::slice::from_ref(&version))
            .map_err(store_error)?;
        let event = Event::ReplicationApplied {
            unique_id: version.unique_id,
            version: version.version,
            deleted: version.deleted,
        };
        hsm.replica_audit(slot, event);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::backup::BackupKey;
    use mesign_proto::Attribute;

    fn version(n: u64) -> ReplicaVersion {
        ReplicaVersion {
            unique_id: "00aa".into(),
            version: n,
            digest: vec![1; 32],
            deleted: false,
        }
    }

    #[test]
    fn the_version_counter_never_wraps() {
        assert_eq!(next_version(None), Some(1));
        assert_eq!(next_version(Some(&version(41))), Some(42));
        assert_eq!(next_version(Some(&version(u64::MAX))), None);
    }

    #[test]
    fn the_tagged_digest_covers_version_attributes_and_key() {
        let object = |label: &[u8], blob: Vec<u8>| {
            Some(BackupObject {
                attributes: vec![Attribute {
                    ty: cryptoki_sys::CKA_LABEL,
                    value: label.to_vec(),
                }],
                key: Some(BackupKey {
                    blob,
                    policy: vec![7],
                }),
            })
        };
        let base = change_digest(&version(2), &object(b"k", vec![1]));
        assert_eq!(base.len(), 32);
        for other in [
            change_digest(&version(3), &object(b"k", vec![1])),
            change_digest(&version(2), &object(b"j", vec![1])),
            change_digest(&version(2), &object(b"k", vec![2])),
            change_digest(&version(2), &None),
        ] {
            assert_ne!(base, other);
        }
    }
}
