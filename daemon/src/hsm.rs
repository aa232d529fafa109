//! The daemon's state and the PKCS#11 semantics of every request.
//!
//! [`Hsm`] owns one [`Slot`] per card and the table of applications and
//! sessions. Locks: the application table first, then a slot's token state;
//! neither is held across a card call or a PIN hash. PIN checks of one slot
//! are serialised by the slot's login lock so that concurrent guesses cannot
//! outrun the failure counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use cryptoki_sys::*;
use mesign_proto::{
    Attribute, AttributeValue, AuditRecordBytes, CardStatus, ReplyBody, RequestBody, SessionInfo,
    SignScheme, SlotInfo, Status, TokenInfo,
};
use pci_driver_shim::command::{
    CardFault, CardRequest, CardResponse, KeyPolicy, SignScheme as CardScheme, MAX_RANDOM,
};

// RSA decryption requests; a child module so that it shares the session
// and object checks below.
#[path = "decrypt.rs"]
mod decrypt;
// Secret keys: generation, import, AES and MACs on the card.
#[path = "symmetric.rs"]
mod symmetric;
// C_DeriveKey (ECDH) on the card.
#[path = "derive.rs"]
mod derive;
// The cloning domain and backups.
#[path = "backup.rs"]
mod backup;
// C_WrapKey / C_UnwrapKey on the card.
#[path = "wrapping.rs"]
mod wrapping;

use crate::attributes::{self, AttrMap};
use crate::audit::{Audit, Event, ObjectName, Role};
use crate::card::{CardFailure, CardPort};
use crate::commit::GroupCommit;
use crate::error::HsmError;
use crate::mechanisms;
use crate::objects::{self, Object, ObjectTable, Owner, SESSION_OBJECT_BASE};
use crate::pin::{self, PinRecord};
use crate::sessions::{AppKey, Apps, Login, SessionView};
use crate::store::{CardKey, Edit, ObjectRecord, Store, StoreError, TokenRecord};

/// PIN policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinPolicy {
    pub max_attempts: u32,
    pub min_len: usize,
    pub max_len: usize,
    /// PBKDF2 iterations for new PIN records.
    pub iterations: u32,
}

impl Default for PinPolicy {
    fn default() -> Self {
        PinPolicy {
            max_attempts: 10,
            min_len: 4,
            max_len: 64,
            iterations: pin::PIN_ITERATIONS,
        }
    }
}

/// One card and its token.
pub struct Slot {
    card: Arc<dyn CardPort>,
    store: Store,
    token: RwLock<TokenState>,
    /// Every change to the token record and to token objects goes through
    /// here: concurrent writers share one durable commit, and memory is
    /// updated only once the change is durable.
    commits: GroupCommit<TokenChange, Arc<StoreError>>,
    login_lock: Mutex<()>,
    next_token_object: AtomicU64,
    /// The slot's audit log; none for in-memory slots (fuzzing).
    audit: Option<Audit>,
    /// Replication of token-object changes to peer boxes, once the daemon
    /// starts it (see `backup.rs` and `crate::replication`).
    replication: std::sync::OnceLock<backup::Replication>,
}

struct TokenState {
    record: TokenRecord,
    objects: ObjectTable,
}

/// An edit of the token record, applied to the record current at commit
/// time so that concurrent edits (counters, the id high-water mark) are
/// never lost.
type RecordEdit = Box<dyn FnOnce(&mut TokenRecord) + Send>;

/// One writer's change to a token, as queued for a group commit; applied
/// in the order: record, clear, delete, put.
#[derive(Default)]
struct TokenChange {
    record: Option<RecordEdit>,
    /// Remove every token object (C_InitToken).
    clear_objects: bool,
    delete: Vec<u64>,
    /// Token objects to add or replace.
    put: Vec<(u64, Object)>,
    /// Received from a peer box: not replicated back.
    from_peer: bool,
}

impl Slot {
    /// Opens the token store of `card` at `db_path`.
    pub fn open(card: Arc<dyn CardPort>, db_path: &std::path::Path) -> Result<Slot, HsmError> {
        let opened = Store::open(db_path, &card.info().serial)?;
        let audit_path = db_path.with_file_name("audit.log");
        let audit = Audit::open(&audit_path).map_err(HsmError::Audit)?;
        let slot = Slot::with_store(card, opened, Some(audit));
        slot.assign_missing_unique_ids()?;
        Ok(slot)
    }

    /// A slot whose token store lives in memory (fuzzing only).
    #[cfg(feature = "fuzzing")]
    pub fn in_memory(card: Arc<dyn CardPort>) -> Result<Slot, HsmError> {
        let opened = Store::in_memory(&card.info().serial)?;
        Ok(Slot::with_store(card, opened, None))
    }

    fn with_store(
        card: Arc<dyn CardPort>,
        opened: crate::store::Opened,
        audit: Option<Audit>,
    ) -> Slot {
        let (store, record, stored) = opened;
        let mut objects = ObjectTable::default();
        let mut next = record.next_object_id;
        for (id, r) in stored {
            next = next.max(id + 1);
            let object = Object {
                attrs: attributes::from_list(&r.attributes),
                card_key: r.card_key.map(Arc::new),
                owner: None,
            };
            objects.insert(id, object);
        }
        Slot {
            card,
            store,
            token: RwLock::new(TokenState { record, objects }),
            commits: GroupCommit::default(),
            login_lock: Mutex::new(()),
            next_token_object: AtomicU64::new(next),
            audit,
            replication: std::sync::OnceLock::new(),
        }
    }

    /// Appends `event` to the slot's audit log, durably.
    fn audit(&self, pid: Option<i32>, event: Event) {
        if let Some(audit) = &self.audit {
            audit.record(pid, &event);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, TokenState> {
        // A panic while holding the lock leaves the state as the last
        // committed change made it, so the poison flag can be ignored.
        self.token.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, TokenState> {
        self.token.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the token record durably, then in memory.
    fn update_record(
        &self,
        edit: impl FnOnce(&mut TokenRecord) + Send + 'static,
    ) -> Result<(), HsmError> {
        self.commit(TokenChange {
            record: Some(Box::new(edit)),
            ..TokenChange::default()
        })
    }

    /// Makes `change` durable (sharing the commit with concurrent writers),
    /// then visible in memory; on failure neither happens.
    fn commit(&self, change: TokenChange) -> Result<(), HsmError> {
        let outgoing = self.replicate_before(&change)?;
        self.commits
            .submit(
                change,
                |batch| self.commit_batch(batch),
                || Arc::new(StoreError::CommitPanicked),
            )
            .map_err(|e| HsmError::Store(StoreError::Batch(e)))?;
        self.replicate_after(outgoing);
        Ok(())
    }

    /// The leader's part of a group commit: one write transaction for the
    /// whole batch, then the in-memory update under a short write lock.
    /// Readers (signatures, searches) run on during the fsync.
    fn commit_batch(&self, mut batch: Vec<TokenChange>) -> Result<(), Arc<StoreError>> {
        // Only committers change the record, one batch at a time, so this
        // is the record as last committed.
        let mut record = self.read().record.clone();
        let mut record_changed = false;
        let mut edits = Vec::new();
        for change in &mut batch {
            if let Some(edit) = change.record.take() {
                edit(&mut record);
                record_changed = true;
            }
            if change.clear_objects {
                edits.push(Edit::ClearObjects);
            }
            edits.extend(change.delete.iter().map(|&h| Edit::Delete(h)));
            edits.extend(change.put.iter().map(|(h, o)| Edit::Put(*h, record_of(o))));
        }
        self.store
            .apply(record_changed.then_some(&record), &edits)
            .map_err(Arc::new)?;
        let mut state = self.write();
        state.record = record;
        for change in batch {
            if change.clear_objects {
                for handle in state.objects.token_handles() {
                    state.objects.remove(handle);
                }
            }
            for handle in change.delete {
                state.objects.remove(handle);
            }
            for (handle, object) in change.put {
                state.objects.insert(handle, object);
            }
        }
        Ok(())
    }
}

/// The daemon's state.
pub struct Hsm {
    pins: PinPolicy,
    slots: Vec<Slot>,
    apps: Mutex<Apps>,
    next_session_object: AtomicU64,
}

/// One C_Sign as a connection received it.
pub struct SignCall {
    pub session: u64,
    pub key: u64,
    pub mechanism: u64,
    pub scheme: SignScheme,
    pub input: Vec<u8>,
}

/// What an operation needs of its key (see [`Hsm::usable_key`]).
struct KeyUse {
    class: u64,
    usage: u64,
    mechanism: u64,
    /// The answer for a key of another class.
    other_class: HsmError,
}

impl KeyUse {
    /// A private key with `usage`; a public or secret key cannot serve.
    fn private(usage: u64, mechanism: u64) -> KeyUse {
        KeyUse {
            class: CKO_PRIVATE_KEY,
            usage,
            mechanism,
            other_class: HsmError::KeyFunctionNotPermitted,
        }
    }

    /// A secret key with `usage`; a key pair's half is the wrong type.
    fn secret(usage: u64, mechanism: u64) -> KeyUse {
        KeyUse {
            class: CKO_SECRET_KEY,
            usage,
            mechanism,
            other_class: HsmError::KeyTypeInconsistent,
        }
    }
}

/// A key found fit for an operation.
struct UsableKey {
    /// The object's id (not its handle).
    id: u64,
    card_key: Arc<CardKey>,
    always_authenticate: bool,
}

/// A C_Sign that passed the daemon's checks, with its card command.
struct PreparedSign {
    slot_id: u64,
    key: u64,
    scheme: CardScheme,
    request: CardRequest,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hsm {
    pub fn new(pins: PinPolicy, slots: Vec<Slot>) -> Hsm {
        Hsm {
            pins,
            slots,
            apps: Mutex::new(Apps::default()),
            next_session_object: AtomicU64::new(SESSION_OBJECT_BASE),
        }
    }

    /// A new connection of `app`.
    pub fn connect(&self, app: AppKey) {
        lock(&self.apps).connect(app);
    }

    /// A connection of `app` closed; its last one ends the application.
    pub fn disconnect(&self, app: AppKey) {
        let closed = lock(&self.apps).disconnect(app);
        for (session, slot) in closed {
            self.drop_session_objects(slot, session);
        }
    }

    /// Session objects held in all slots (the fuzz targets check that none
    /// outlives its connection).
    #[cfg(feature = "fuzzing")]
    pub fn session_objects(&self) -> usize {
        self.slots
            .iter()
            .map(|s| {
                let state = s.read();
                state.objects.len() - state.objects.token_objects()
            })
            .sum()
    }

    /// Serves one request of `app`.
    pub fn handle(&self, app: AppKey, body: RequestBody) -> Result<ReplyBody, HsmError> {
        match body {
            RequestBody::Hello { .. } => Err(HsmError::ProtocolOrder),
            RequestBody::Slots => Ok(ReplyBody::Slots(self.slot_list())),
            RequestBody::TokenInfo { slot } => Ok(ReplyBody::TokenInfo(self.token_info(slot)?)),
            RequestBody::Mechanisms { slot } => {
                self.slot(slot)?;
                Ok(ReplyBody::Mechanisms(mechanisms::mechanism_list()))
            }
            RequestBody::InitToken {
                slot,
                so_pin,
                label,
            } => self
                .init_token(app, slot, &so_pin, &label)
                .map(|()| ReplyBody::Done),
            RequestBody::InitPin { session, pin } => {
                self.init_pin(app, session, &pin).map(|()| ReplyBody::Done)
            }
            RequestBody::SetPin {
                session,
                old_pin,
                new_pin,
            } => self
                .set_pin(app, session, &old_pin, &new_pin)
                .map(|()| ReplyBody::Done),
            RequestBody::OpenSession { slot, flags } => {
                self.open_session(app, slot, flags).map(ReplyBody::Session)
            }
            RequestBody::CloseSession { session } => {
                self.close_session(app, session).map(|()| ReplyBody::Done)
            }
            RequestBody::CloseAllSessions { slot } => {
                self.close_all_sessions(app, slot).map(|()| ReplyBody::Done)
            }
            RequestBody::SessionInfo { session } => {
                let view = self.view(app, session)?;
                Ok(ReplyBody::SessionInfo(SessionInfo {
                    slot: view.slot,
                    state: view.state(),
                    flags: CKF_SERIAL_SESSION | if view.rw { CKF_RW_SESSION } else { 0 },
                    device_error: 0,
                }))
            }
            RequestBody::Login {
                session,
                user_type,
                pin,
            } => self
                .login(app, session, user_type, &pin)
                .map(|()| ReplyBody::Done),
            RequestBody::Logout { session } => self.logout(app, session).map(|()| ReplyBody::Done),
            RequestBody::DropContextLogin { session } => {
                let mut apps = lock(&self.apps);
                apps.view(app, session)?;
                apps.take_context_login(app, session);
                Ok(ReplyBody::Done)
            }
            RequestBody::CreateObject {
                session,
                mut template,
            } => {
                let created = self.create_object(app, session, &template);
                attributes::secret_keys::zeroize_values(&mut template);
                created.map(ReplyBody::Object)
            }
            RequestBody::GenerateKey {
                session,
                mechanism,
                template,
            } => self
                .generate_key(app, session, mechanism, &template)
                .map(ReplyBody::Object),
            RequestBody::SecretEncrypt {
                session,
                key,
                mechanism,
                params,
                input,
            } => self
                .secret_crypt(app, session, key, mechanism, &params, &input, true)
                .map(ReplyBody::Bytes),
            RequestBody::SecretDecrypt {
                session,
                key,
                mechanism,
                params,
                input,
            } => self
                .secret_crypt(app, session, key, mechanism, &params, &input, false)
                .map(ReplyBody::Bytes),
            RequestBody::MacSign {
                session,
                key,
                mechanism,
                input,
            } => self
                .mac(app, session, key, mechanism, &input, None)?
                .map(ReplyBody::Bytes)
                .ok_or(HsmError::Card(CardFailure::UnexpectedResponse)),
            RequestBody::MacVerify {
                session,
                key,
                mechanism,
                input,
                mac,
            } => self
                .mac(app, session, key, mechanism, &input, Some(&mac))
                .map(|_| ReplyBody::Done),
            RequestBody::DeriveKey {
                session,
                mechanism,
                base,
                params,
                template,
            } => self
                .derive_key(app, session, mechanism, base, &params, &template)
                .map(ReplyBody::Object),
            RequestBody::WrapKey {
                session,
                mechanism,
                wrapping,
                key,
            } => self
                .wrap_key(app, session, &mechanism, wrapping, key)
                .map(ReplyBody::Bytes),
            RequestBody::UnwrapKey {
                session,
                mechanism,
                unwrapping,
                wrapped,
                template,
            } => self
                .unwrap_key(app, session, &mechanism, unwrapping, &wrapped, &template)
                .map(ReplyBody::Object),
            RequestBody::CopyObject {
                session,
                object,
                template,
            } => self
                .copy_object(app, session, object, &template)
                .map(ReplyBody::Object),
            RequestBody::DestroyObject { session, object } => self
                .destroy_object(app, session, object)
                .map(|()| ReplyBody::Done),
            RequestBody::ObjectSize { session, object } => self
                .object_size(app, session, object)
                .map(ReplyBody::ObjectSize),
            RequestBody::GetAttributes {
                session,
                object,
                types,
            } => self
                .get_attributes(app, session, object, &types)
                .map(ReplyBody::Attributes),
            RequestBody::SetAttributes {
                session,
                object,
                template,
            } => self
                .set_attributes(app, session, object, &template)
                .map(|()| ReplyBody::Done),
            RequestBody::FindObjects { session, template } => self
                .find_objects(app, session, &template)
                .map(ReplyBody::Objects),
            RequestBody::GenerateKeyPair {
                session,
                mechanism,
                public_template,
                private_template,
            } => {
                let (public, private) = self.generate_key_pair(
                    app,
                    session,
                    mechanism,
                    &public_template,
                    &private_template,
                )?;
                Ok(ReplyBody::KeyPair { public, private })
            }
            RequestBody::Sign {
                session,
                key,
                mechanism,
                scheme,
                input,
            } => {
                let call = SignCall {
                    session,
                    key,
                    mechanism,
                    scheme,
                    input,
                };
                let mut signed = self.sign_many(app, vec![call]);
                signed
                    .pop()
                    .expect("one answer per call")
                    .map(ReplyBody::Bytes)
            }
            RequestBody::Decrypt {
                session,
                key,
                mechanism,
                scheme,
                input,
            } => self
                .decrypt(app, session, key, mechanism, &scheme, &input)
                .map(ReplyBody::Bytes),
            RequestBody::OaepEncrypt {
                session,
                key,
                scheme,
                input,
            } => self
                .oaep_encrypt(app, session, key, &scheme, &input)
                .map(ReplyBody::Bytes),
            RequestBody::GenerateRandom { session, len } => self
                .generate_random(app, session, len)
                .map(ReplyBody::Bytes),
            RequestBody::CheckSession { session } => {
                self.view(app, session).map(|_| ReplyBody::Done)
            }
            RequestBody::Status => Ok(ReplyBody::Status(self.status())),
            RequestBody::DomainCreate {
                session,
                threshold,
                passphrases,
                replace,
            } => self
                .domain_create(app, session, threshold, passphrases, replace)
                .map(ReplyBody::DomainShares),
            RequestBody::DomainJoin {
                session,
                shares,
                replace,
            } => self
                .domain_join(app, session, shares, replace)
                .map(|id| ReplyBody::Domain { id }),
            RequestBody::DomainCaPublic { slot } => {
                self.domain_ca_public(slot).map(ReplyBody::Bytes)
            }
            RequestBody::DomainCaSign { session, tbs } => {
                self.domain_ca_sign(app, session, tbs).map(ReplyBody::Bytes)
            }
            // Served by the connection for peer boxes only (`server.rs`).
            RequestBody::ReplicaVersions { .. } | RequestBody::ReplicaApply { .. } => {
                Err(HsmError::NotAPeer)
            }
            RequestBody::DomainShow { slot } => {
                self.domain_show(slot).map(|id| ReplyBody::Domain { id })
            }
            RequestBody::BackupExport { session } => {
                self.backup_export(app, session).map(ReplyBody::Bytes)
            }
            RequestBody::BackupImport { session, file } => self
                .backup_import(app, session, &file)
                .map(|(restored, skipped)| ReplyBody::BackupImported { restored, skipped }),
            RequestBody::AuditRead { slot, from, max } => {
                let slot = self.slot(slot)?;
                let records = match &slot.audit {
                    Some(audit) => audit.read(from, max).map_err(HsmError::Audit)?,
                    None => Vec::new(),
                };
                Ok(ReplyBody::AuditRecords(
                    records.into_iter().map(AuditRecordBytes).collect(),
                ))
            }
        }
    }

    fn slot(&self, slot: u64) -> Result<&Slot, HsmError> {
        usize::try_from(slot)
            .ok()
            .and_then(|i| self.slots.get(i))
            .ok_or(HsmError::SlotIdInvalid(slot))
    }

    fn view(&self, app: AppKey, session: u64) -> Result<SessionView, HsmError> {
        lock(&self.apps).view(app, session)
    }

    fn slot_list(&self) -> Vec<SlotInfo> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let info = s.card.info();
                SlotInfo {
                    slot: i as u64,
                    description: slot_description(&info.model),
                    manufacturer: "MeSign".into(),
                    flags: CKF_TOKEN_PRESENT | CKF_HW_SLOT,
                    hardware_version: info.hardware_version,
                    firmware_version: info.firmware_version,
                }
            })
            .collect()
    }

    fn token_info(&self, slot_id: u64) -> Result<TokenInfo, HsmError> {
        let slot = self.slot(slot_id)?;
        let info = slot.card.info();
        let (sessions, rw_sessions) = lock(&self.apps).counts(slot_id);
        let state = slot.read();
        let r = &state.record;
        let mut flags = CKF_RNG | CKF_LOGIN_REQUIRED;
        if r.initialized {
            flags |= CKF_TOKEN_INITIALIZED;
        }
        if r.user_pin.is_some() {
            flags |= CKF_USER_PIN_INITIALIZED;
        }
        flags |= pin::user_pin_flags(pin::pin_state(r.user_failures, self.pins.max_attempts));
        flags |= pin::so_pin_flags(pin::pin_state(r.so_failures, self.pins.max_attempts));
        Ok(TokenInfo {
            label: r.label.clone(),
            manufacturer: "MeSign".into(),
            model: token_model(info.emulated).into(),
            serial: info.serial.clone(),
            flags,
            max_session_count: CK_EFFECTIVELY_INFINITE,
            session_count: sessions,
            max_rw_session_count: CK_EFFECTIVELY_INFINITE,
            rw_session_count: rw_sessions,
            max_pin_len: self.pins.max_len as u64,
            min_pin_len: self.pins.min_len as u64,
            total_public_memory: CK_UNAVAILABLE_INFORMATION,
            free_public_memory: CK_UNAVAILABLE_INFORMATION,
            total_private_memory: CK_UNAVAILABLE_INFORMATION,
            free_private_memory: CK_UNAVAILABLE_INFORMATION,
            hardware_version: info.hardware_version,
            firmware_version: info.firmware_version,
            utc_time: String::new(),
        })
    }

    fn status(&self) -> Status {
        let cards = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let info = s.card.info();
                let state = s.read();
                CardStatus {
                    slot: i as u64,
                    backend: s.card.backend(),
                    serial: info.serial.clone(),
                    firmware_version: info.firmware_version,
                    operational: info.operational,
                    token_initialized: state.record.initialized,
                    objects: state.objects.token_objects() as u64,
                }
            })
            .collect();
        Status {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            cards,
        }
    }

    fn check_pin_len(&self, pin: &[u8]) -> Result<(), HsmError> {
        if pin.len() < self.pins.min_len || pin.len() > self.pins.max_len {
            return Err(HsmError::PinLenRange(pin.len()));
        }
        Ok(())
    }

    fn new_pin_record(&self, pin: &[u8]) -> PinRecord {
        PinRecord::with_iterations(pin, self.pins.iterations)
    }

    /// Verifies `pin` against the SO or user PIN of `slot`, counting
    /// failures durably. The caller holds the slot's login lock.
    fn verify_pin(&self, pid: i32, slot: &Slot, who: Login, pin: &[u8]) -> Result<(), HsmError> {
        let (record, failures) = {
            let state = slot.read();
            let r = &state.record;
            match who {
                Login::So => (r.so_pin.clone(), r.so_failures),
                Login::User => (r.user_pin.clone(), r.user_failures),
            }
        };
        let record = record.ok_or(match who {
            Login::So => HsmError::PinIncorrect,
            Login::User => HsmError::UserPinNotInitialized,
        })?;
        if failures >= self.pins.max_attempts {
            return Err(HsmError::PinLocked);
        }
        if record.verify(pin) {
            if failures > 0 {
                slot.update_record(move |r| match who {
                    Login::So => r.so_failures = 0,
                    Login::User => r.user_failures = 0,
                })?;
            }
            Ok(())
        } else {
            slot.update_record(move |r| match who {
                Login::So => r.so_failures += 1,
                Login::User => r.user_failures += 1,
            })?;
            // The login lock is held: the count just written is this one.
            let (role, failures) = (role(who), failures + 1);
            slot.audit(Some(pid), Event::LoginFailure { role, failures });
            if failures >= self.pins.max_attempts {
                slot.audit(Some(pid), Event::PinLocked { role });
            }
            Err(HsmError::PinIncorrect)
        }
    }

    fn init_token(
        &self,
        app: AppKey,
        slot_id: u64,
        so_pin: &[u8],
        label: &[u8],
    ) -> Result<(), HsmError> {
        let slot = self.slot(slot_id)?;
        self.check_pin_len(so_pin)?;
        if lock(&self.apps).counts(slot_id).0 > 0 {
            return Err(HsmError::SessionExists);
        }
        let _login = lock(&slot.login_lock);
        if slot.read().record.initialized {
            self.verify_pin(app.pid, slot, Login::So, so_pin)?;
        }
        let so_record = self.new_pin_record(so_pin);
        let mut label = label.to_vec();
        label.resize(32, b' ');
        // A session opened while the PIN was being checked would keep
        // handles to objects about to vanish.
        if lock(&self.apps).counts(slot_id).0 > 0 {
            return Err(HsmError::SessionExists);
        }
        let event = Event::TokenInit {
            label: label.clone(),
        };
        slot.commit(TokenChange {
            record: Some(Box::new(move |record| {
                record.label = label;
                record.initialized = true;
                record.so_pin = Some(so_record);
                record.user_pin = None;
                record.so_failures = 0;
                record.user_failures = 0;
            })),
            clear_objects: true,
            ..TokenChange::default()
        })?;
        slot.audit(Some(app.pid), event);
        Ok(())
    }

    fn init_pin(&self, app: AppKey, session: u64, pin: &[u8]) -> Result<(), HsmError> {
        let view = self.view(app, session)?;
        if view.login != Some(Login::So) {
            return Err(HsmError::UserNotLoggedIn);
        }
        if !view.rw {
            return Err(HsmError::SessionReadOnly);
        }
        self.check_pin_len(pin)?;
        let slot = self.slot(view.slot)?;
        let record = self.new_pin_record(pin);
        let _login = lock(&slot.login_lock);
        slot.update_record(move |r| {
            r.user_pin = Some(record);
            r.user_failures = 0;
        })?;
        slot.audit(Some(app.pid), Event::PinInitialized);
        Ok(())
    }

    fn set_pin(&self, app: AppKey, session: u64, old: &[u8], new: &[u8]) -> Result<(), HsmError> {
        let view = self.view(app, session)?;
        if !view.rw {
            return Err(HsmError::SessionReadOnly);
        }
        self.check_pin_len(new)?;
        let who = if view.login == Some(Login::So) {
            Login::So
        } else {
            Login::User
        };
        let slot = self.slot(view.slot)?;
        let _login = lock(&slot.login_lock);
        self.verify_pin(app.pid, slot, who, old)?;
        let record = self.new_pin_record(new);
        slot.update_record(move |r| match who {
            Login::So => r.so_pin = Some(record),
            Login::User => r.user_pin = Some(record),
        })?;
        slot.audit(Some(app.pid), Event::PinChanged { role: role(who) });
        Ok(())
    }

    fn login(&self, app: AppKey, session: u64, user_type: u64, pin: &[u8]) -> Result<(), HsmError> {
        let who = match user_type {
            CKU_SO => Login::So,
            CKU_USER => Login::User,
            CKU_CONTEXT_SPECIFIC => return self.context_login(app, session, pin),
            other => return Err(HsmError::UserTypeInvalid(other)),
        };
        let view = self.view(app, session)?;
        lock(&self.apps).check_login(&view, who)?;
        let slot = self.slot(view.slot)?;
        let _login = lock(&slot.login_lock);
        self.verify_pin(app.pid, slot, who, pin)?;
        {
            let mut apps = lock(&self.apps);
            // Re-check: another connection of the app may have logged in or
            // opened a read-only session while the PIN was hashed.
            let view = apps.view(app, session)?;
            apps.check_login(&view, who)?;
            apps.set_login(app, view.slot, who);
        }
        slot.audit(Some(app.pid), Event::Login { role: role(who) });
        Ok(())
    }

    /// C_Login(CKU_CONTEXT_SPECIFIC): the module has checked that an
    /// operation is active; the daemon checks the user PIN (counting
    /// failures like a user login) and lets the session use one
    /// CKA_ALWAYS_AUTHENTICATE key once.
    fn context_login(&self, app: AppKey, session: u64, pin: &[u8]) -> Result<(), HsmError> {
        let view = self.view(app, session)?;
        if !view.user() {
            return Err(HsmError::UserNotLoggedIn);
        }
        let slot = self.slot(view.slot)?;
        let _login = lock(&slot.login_lock);
        self.verify_pin(app.pid, slot, Login::User, pin)?;
        let mut apps = lock(&self.apps);
        // The application may have logged out while the PIN was hashed.
        if !apps.view(app, session)?.user() {
            return Err(HsmError::UserNotLoggedIn);
        }
        apps.grant_context_login(app, session)
    }

    /// C_Logout: ends the application's login on the slot (with it the
    /// generation its private handles carry) and destroys its private
    /// session objects (PKCS#11 2.40 §5.6).
    fn logout(&self, app: AppKey, session: u64) -> Result<(), HsmError> {
        let view = self.view(app, session)?;
        let slot = self.slot(view.slot)?;
        // The application table stays locked until the objects are gone,
        // so a login racing this one never sees them.
        let mut apps = lock(&self.apps);
        apps.logout(app, view.slot)?;
        let mut state = slot.write();
        for id in state.objects.private_owned_by_app(app) {
            state.objects.remove(id);
        }
        Ok(())
    }

    fn open_session(&self, app: AppKey, slot_id: u64, flags: u64) -> Result<u64, HsmError> {
        let slot = self.slot(slot_id)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(HsmError::SessionParallelNotSupported);
        }
        if !slot.read().record.initialized {
            return Err(HsmError::TokenNotRecognized(slot_id));
        }
        lock(&self.apps).open(app, slot_id, flags & CKF_RW_SESSION != 0)
    }

    fn close_session(&self, app: AppKey, session: u64) -> Result<(), HsmError> {
        let closed = lock(&self.apps).close(app, session)?;
        self.drop_session_objects(closed.slot, session);
        Ok(())
    }

    fn close_all_sessions(&self, app: AppKey, slot_id: u64) -> Result<(), HsmError> {
        self.slot(slot_id)?;
        let handles = lock(&self.apps).sessions_of(app, slot_id);
        for session in handles {
            // A concurrent close of the same session is not an error here.
            let _ = self.close_session(app, session);
        }
        Ok(())
    }

    fn drop_session_objects(&self, slot_id: u64, session: u64) {
        let Ok(slot) = self.slot(slot_id) else { return };
        let mut state = slot.write();
        for handle in state.objects.owned_by(session) {
            state.objects.remove(handle);
        }
    }

    /// True if `object` may be seen from `view`.
    fn visible(view: &SessionView, object: &Object) -> bool {
        (!object.is_private() || view.user()) && object.owner.is_none_or(|o| o.app == view.app)
    }

    /// The id and object `handle` names for `view`: the object must be
    /// visible, and a private object's handle must carry the generation of
    /// the current login (handles from before a C_Logout stay invalid).
    /// Uses up the session's context-specific login when the key needs
    /// one (CKA_ALWAYS_AUTHENTICATE), before the card is asked.
    fn use_context_login(&self, app: AppKey, session: u64, needed: bool) -> Result<(), HsmError> {
        if needed && !lock(&self.apps).take_context_login(app, session) {
            return Err(HsmError::UserNotLoggedIn);
        }
        Ok(())
    }

    /// The card key behind `handle` for one operation: an object the
    /// session sees, of class `want.class`, with its `want.usage` flag set
    /// and `want.mechanism` among its CKA_ALLOWED_MECHANISMS when those are
    /// listed (an empty list restricts nothing, as in SoftHSMv2). A key of
    /// another class fails with `want.other_class`.
    fn usable_key(
        objects: &ObjectTable,
        view: &SessionView,
        handle: u64,
        want: KeyUse,
    ) -> Result<UsableKey, HsmError> {
        let (id, object) =
            Self::resolve(objects, view, handle).ok_or(HsmError::KeyHandleInvalid(handle))?;
        match attributes::ulong(&object.attrs, CKA_CLASS) {
            Some(class) if class == want.class => {}
            Some(CKO_PUBLIC_KEY | CKO_PRIVATE_KEY | CKO_SECRET_KEY) => return Err(want.other_class),
            _ => return Err(HsmError::KeyHandleInvalid(handle)),
        }
        if attributes::flag(&object.attrs, want.usage) != Some(true) {
            return Err(HsmError::KeyFunctionNotPermitted);
        }
        if let Some(allowed) = attributes::allowed_mechanisms(&object.attrs) {
            if !allowed.is_empty() && !allowed.contains(&want.mechanism) {
                return Err(HsmError::MechanismInvalid(want.mechanism));
            }
        }
        let card_key = object
            .card_key
            .clone()
            .ok_or(HsmError::KeyHandleInvalid(handle))?;
        Ok(UsableKey {
            id,
            card_key,
            always_authenticate: attributes::flag(&object.attrs, CKA_ALWAYS_AUTHENTICATE)
                == Some(true),
        })
    }

    fn resolve<'a>(
        objects: &'a ObjectTable,
        view: &SessionView,
        handle: u64,
    ) -> Option<(u64, &'a Object)> {
        let (id, generation) = objects::split_handle(handle);
        let object = objects.get(id).filter(|o| Self::visible(view, o))?;
        let current = if object.is_private() {
            view.generation
        } else {
            0
        };
        (generation == current).then_some((id, object))
    }

    /// The handle under which `view` sees the object `id`.
    fn handle_of(view: &SessionView, id: u64, object: &Object) -> u64 {
        objects::handle(id, object, view.generation)
    }

    /// The id of a visible object and a copy of it.
    fn object(&self, view: &SessionView, handle: u64) -> Result<(u64, Object), HsmError> {
        let slot = self.slot(view.slot)?;
        let state = slot.read();
        Self::resolve(&state.objects, view, handle)
            .map(|(id, o)| (id, o.clone()))
            .ok_or(HsmError::ObjectHandleInvalid(handle))
    }

    /// Checks that a new object described by `attrs` may be made in `view`.
    fn check_new_object(view: &SessionView, attrs: &AttrMap) -> Result<(), HsmError> {
        if attributes::flag(attrs, CKA_TOKEN) == Some(true) && !view.rw {
            return Err(HsmError::SessionReadOnly);
        }
        if attributes::flag(attrs, CKA_PRIVATE) == Some(true) && !view.user() {
            return Err(HsmError::UserNotLoggedIn);
        }
        Ok(())
    }

    fn allocate(&self, slot: &Slot, token: bool) -> u64 {
        if token {
            slot.next_token_object.fetch_add(1, Ordering::SeqCst)
        } else {
            self.next_session_object.fetch_add(1, Ordering::SeqCst)
        }
    }

    /// Stores new or changed objects: token objects durably (with the id
    /// high-water mark) and then in memory, session objects in memory.
    fn store_objects(
        &self,
        view: &SessionView,
        objects: Vec<(u64, Object)>,
    ) -> Result<(), HsmError> {
        let slot = self.slot(view.slot)?;
        let (token, session): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .map(|(id, mut o)| {
                backup::assign_unique_id(&mut o.attrs);
                (id, o)
            })
            .partition(|(_, o)| o.is_token());
        if let Some(highest) = token.iter().map(|(h, _)| *h).max() {
            slot.commit(TokenChange {
                record: Some(Box::new(move |r| {
                    r.next_object_id = r.next_object_id.max(highest + 1)
                })),
                put: token,
                ..TokenChange::default()
            })?;
        }
        if !session.is_empty() {
            let mut state = slot.write();
            for (handle, object) in session {
                state.objects.insert(handle, object);
            }
        }
        Ok(())
    }

    fn new_object(
        &self,
        view: &SessionView,
        attrs: AttrMap,
        card_key: Option<Arc<CardKey>>,
    ) -> Object {
        let token = attributes::flag(&attrs, CKA_TOKEN) == Some(true);
        let owner = (!token).then_some(Owner {
            session: view.handle,
            app: view.app,
        });
        Object {
            attrs,
            card_key,
            owner,
        }
    }

    fn create_object(
        &self,
        app: AppKey,
        session: u64,
        template: &[Attribute],
    ) -> Result<u64, HsmError> {
        if attributes::secret_keys::is_secret_key(template) {
            return self.import_secret_key(app, session, template);
        }
        let view = self.view(app, session)?;
        let attrs = attributes::new_object(
            attributes::parse_template(template)?,
            view.login == Some(Login::So),
        )?;
        Self::check_new_object(&view, &attrs)?;
        let slot = self.slot(view.slot)?;
        let token = attributes::flag(&attrs, CKA_TOKEN) == Some(true);
        let id = self.allocate(slot, token);
        let object = self.new_object(&view, attrs, None);
        let name = object_name(id, &object);
        let handle = Self::handle_of(&view, id, &object);
        self.store_objects(&view, vec![(id, object)])?;
        if token {
            slot.audit(Some(app.pid), created(name));
        }
        Ok(handle)
    }

    fn copy_object(
        &self,
        app: AppKey,
        session: u64,
        handle: u64,
        template: &[Attribute],
    ) -> Result<u64, HsmError> {
        let view = self.view(app, session)?;
        let (_, source) = self.object(&view, handle)?;
        if source.card_key.is_some() {
            // The card key's policy names its object id; a copy would need
            // the card to re-wrap it.
            return Err(HsmError::ActionProhibited(CKA_COPYABLE));
        }
        let changes = attributes::parse_template(template)?;
        let mut attrs =
            attributes::copy_attributes(&source.attrs, &changes, view.login == Some(Login::So))?;
        // A copy is a new object: the token gives it its own identity.
        attrs.remove(&CKA_UNIQUE_ID);
        Self::check_new_object(&view, &attrs)?;
        let slot = self.slot(view.slot)?;
        let token = attributes::flag(&attrs, CKA_TOKEN) == Some(true);
        let id = self.allocate(slot, token);
        let object = self.new_object(&view, attrs, None);
        let name = object_name(id, &object);
        let new_handle = Self::handle_of(&view, id, &object);
        self.store_objects(&view, vec![(id, object)])?;
        if token {
            slot.audit(Some(app.pid), created(name));
        }
        Ok(new_handle)
    }

    fn destroy_object(&self, app: AppKey, session: u64, handle: u64) -> Result<(), HsmError> {
        let view = self.view(app, session)?;
        let (id, object) = self.object(&view, handle)?;
        if object.is_token() && !view.rw {
            return Err(HsmError::SessionReadOnly);
        }
        if attributes::flag(&object.attrs, CKA_DESTROYABLE) == Some(false) {
            return Err(HsmError::ActionProhibited(CKA_DESTROYABLE));
        }
        let slot = self.slot(view.slot)?;
        if object.is_token() {
            slot.commit(TokenChange {
                delete: vec![id],
                ..TokenChange::default()
            })?;
            let event = Event::ObjectDestroyed(object_name(id, &object));
            slot.audit(Some(app.pid), event);
            Ok(())
        } else {
            slot.write().objects.remove(id);
            Ok(())
        }
    }

    fn object_size(&self, app: AppKey, session: u64, handle: u64) -> Result<u64, HsmError> {
        let view = self.view(app, session)?;
        let (_, object) = self.object(&view, handle)?;
        Ok(record_of(&object).to_bytes().len() as u64)
    }

    fn get_attributes(
        &self,
        app: AppKey,
        session: u64,
        handle: u64,
        types: &[u64],
    ) -> Result<Vec<AttributeValue>, HsmError> {
        let view = self.view(app, session)?;
        let (_, object) = self.object(&view, handle)?;
        Ok(types
            .iter()
            .map(|&ty| attributes::read(&object.attrs, ty))
            .collect())
    }

    fn set_attributes(
        &self,
        app: AppKey,
        session: u64,
        handle: u64,
        template: &[Attribute],
    ) -> Result<(), HsmError> {
        let view = self.view(app, session)?;
        let (id, object) = self.object(&view, handle)?;
        if object.is_token() && !view.rw {
            return Err(HsmError::SessionReadOnly);
        }
        let changes = attributes::parse_template(template)?;
        let attrs = attributes::set_attributes(
            &object.attrs,
            &changes,
            object.card_key.is_some(),
            view.login == Some(Login::So),
        )?;
        self.store_objects(&view, vec![(id, Object { attrs, ..object })])
    }

    fn find_objects(
        &self,
        app: AppKey,
        session: u64,
        template: &[Attribute],
    ) -> Result<Vec<u64>, HsmError> {
        let view = self.view(app, session)?;
        let template = attributes::parse_template(template)?;
        let slot = self.slot(view.slot)?;
        let state = slot.read();
        let ids = state.objects.find(&template, |o| Self::visible(&view, o));
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                let object = state.objects.get(id)?;
                Some(Self::handle_of(&view, id, object))
            })
            .collect())
    }

    fn generate_key_pair(
        &self,
        app: AppKey,
        session: u64,
        mechanism: u64,
        public: &[Attribute],
        private: &[Attribute],
    ) -> Result<(u64, u64), HsmError> {
        let view = self.view(app, session)?;
        let mut plan = attributes::key_pair_plan(
            mechanism,
            attributes::parse_template(public)?,
            attributes::parse_template(private)?,
        )?;
        Self::check_new_object(&view, &plan.public)?;
        Self::check_new_object(&view, &plan.private)?;
        let slot = self.slot(view.slot)?;
        let private_handle = self.allocate(
            slot,
            attributes::flag(&plan.private, CKA_TOKEN) == Some(true),
        );
        let public_handle = self.allocate(
            slot,
            attributes::flag(&plan.public, CKA_TOKEN) == Some(true),
        );
        let policy = KeyPolicy {
            object_id: private_handle,
            spec: plan.spec,
            sign: plan.sign,
            decrypt: plan.decrypt,
            unwrap: plan.unwrap,
            derive: plan.derive,
            sensitive: plan.sensitive,
            extractable: plan.extractable,
            secret: None,
        };
        let (blob, public_key) = match slot.card.call(&CardRequest::GenerateKeyPair {
            policy: policy.clone(),
        })? {
            CardResponse::KeyPair { blob, public } => (blob, public),
            _ => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        };
        attributes::add_public_key(&mut plan, &public_key)?;
        let card_key = Arc::new(CardKey { blob, policy });
        let private_object = self.new_object(&view, plan.private, Some(card_key));
        let public_object = self.new_object(&view, plan.public, None);
        let audited = private_object.is_token().then(|| Event::KeyGenerated {
            private: object_name(private_handle, &private_object),
            public: public_handle,
        });
        let handles = (
            Self::handle_of(&view, public_handle, &public_object),
            Self::handle_of(&view, private_handle, &private_object),
        );
        self.store_objects(
            &view,
            vec![
                (private_handle, private_object),
                (public_handle, public_object),
            ],
        )?;
        if let Some(event) = audited {
            slot.audit(Some(app.pid), event);
        }
        Ok(handles)
    }

    /// Signs for several C_Sign calls of one application at once: each is
    /// checked on its own, then the card gets the accepted ones of each
    /// slot in one batch. Answers come back in the order of `calls`.
    pub fn sign_many(&self, app: AppKey, calls: Vec<SignCall>) -> Vec<Result<Vec<u8>, HsmError>> {
        let mut answers: Vec<Option<Result<Vec<u8>, HsmError>>> = Vec::with_capacity(calls.len());
        let mut ready: Vec<(usize, PreparedSign)> = Vec::with_capacity(calls.len());
        for (index, call) in calls.into_iter().enumerate() {
            match self.prepare_sign(app, call) {
                Ok(prepared) => {
                    answers.push(None);
                    ready.push((index, prepared));
                }
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        while let Some((_, first)) = ready.first() {
            let slot_id = first.slot_id;
            let (batch, rest): (Vec<_>, Vec<_>) =
                ready.into_iter().partition(|(_, p)| p.slot_id == slot_id);
            ready = rest;
            let Ok(slot) = self.slot(slot_id) else {
                unreachable!("prepare_sign checked the slot")
            };
            let mut requests = Vec::with_capacity(batch.len());
            let mut pending = Vec::with_capacity(batch.len());
            for (index, prepared) in batch {
                requests.push(prepared.request);
                pending.push((index, prepared.key, prepared.scheme));
            }
            let signed = slot.card.call_batch(&requests);
            for ((index, key, scheme), answer) in pending.into_iter().zip(signed) {
                answers[index] = Some(Self::signed(slot, key, scheme, answer));
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every call was refused or sent to its card"))
            .collect()
    }

    /// Checks one C_Sign against session, key and policy, and builds its
    /// card command. Consumes a context-specific login the key needs.
    fn prepare_sign(&self, app: AppKey, call: SignCall) -> Result<PreparedSign, HsmError> {
        let SignCall {
            session,
            key,
            mechanism,
            scheme,
            input,
        } = call;
        let view = self.view(app, session)?;
        let slot = self.slot(view.slot)?;
        // A private key's handle is invalid while nobody is logged in, as
        // for every other call (C_Logout invalidates them).
        let UsableKey {
            id,
            card_key,
            always_authenticate,
        } = Self::usable_key(
            &slot.read().objects,
            &view,
            key,
            KeyUse::private(CKA_SIGN, mechanism),
        )?;
        let scheme = mechanisms::sign_scheme(mechanism, scheme, card_key.policy.spec, input.len())?;
        // Consumed before the card is asked, so that one PIN entry never
        // yields two signatures, whatever happens next.
        self.use_context_login(app, session, always_authenticate)?;
        Ok(PreparedSign {
            slot_id: view.slot,
            key: id,
            scheme,
            request: CardRequest::Sign {
                blob: card_key.blob.clone(),
                policy: card_key.policy.clone(),
                scheme,
                input,
            },
        })
    }

    /// The caller's answer to a signature the card was asked for.
    fn signed(
        slot: &Slot,
        key: u64,
        scheme: CardScheme,
        answer: Result<CardResponse, CardFailure>,
    ) -> Result<Vec<u8>, HsmError> {
        match answer {
            Ok(CardResponse::Bytes(signature)) => {
                if let Some(audit) = &slot.audit {
                    // Counted in memory; the object is looked up again
                    // only for a key's first signature since a flush.
                    audit.count_signature(key, || {
                        slot.read()
                            .objects
                            .get(key)
                            .map(|o| object_name(key, o))
                            .unwrap_or(ObjectName {
                                handle: key,
                                ..ObjectName::default()
                            })
                    });
                }
                Ok(signature)
            }
            Ok(_) => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
            // CKM_RSA_PKCS takes no parameters: a DigestInfo of a hash the
            // card does not sign with is bad data, not a bad parameter.
            Err(CardFailure::Fault(CardFault::BadParameters))
                if matches!(scheme, CardScheme::RsaPkcs1DigestInfo) =>
            {
                Err(HsmError::DataInvalid)
            }
            Err(failure) => Err(HsmError::Card(failure)),
        }
    }

    fn generate_random(&self, app: AppKey, session: u64, len: u32) -> Result<Vec<u8>, HsmError> {
        let view = self.view(app, session)?;
        let slot = self.slot(view.slot)?;
        // A reply must fit a frame.
        if len as usize > mesign_proto::MAX_DATA {
            return Err(HsmError::DataLenRange(len as usize));
        }
        let mut out = Vec::with_capacity(len as usize);
        while out.len() < len as usize {
            let chunk = (len - out.len() as u32).min(MAX_RANDOM);
            match slot.card.call(&CardRequest::Random { len: chunk })? {
                CardResponse::Bytes(bytes) if bytes.len() == chunk as usize => {
                    out.extend_from_slice(&bytes)
                }
                _ => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
            }
        }
        Ok(out)
    }
}

impl Hsm {
    /// Writes the signing volume counted so far to every slot's audit log
    /// (at shutdown).
    pub fn flush_audit(&self) {
        for slot in &self.slots {
            if let Some(audit) = &slot.audit {
                audit.flush();
            }
        }
    }
}

fn role(who: Login) -> Role {
    match who {
        Login::So => Role::So,
        Login::User => Role::User,
    }
}

/// How the audit log names `object`.
fn object_name(handle: u64, object: &Object) -> ObjectName {
    ObjectName {
        handle,
        class: attributes::ulong(&object.attrs, CKA_CLASS),
        label: object.attrs.get(&CKA_LABEL).cloned().unwrap_or_default(),
        id: object.attrs.get(&CKA_ID).cloned().unwrap_or_default(),
    }
}

/// The event for a new token object: certificates are named as such.
fn created(name: ObjectName) -> Event {
    if name.class == Some(CKO_CERTIFICATE) {
        Event::CertificateImported(name)
    } else {
        Event::ObjectCreated(name)
    }
}

/// CK_SLOT_INFO.slotDescription holds 64 characters: the card's own,
/// honest description (the emulator says it is not tamper-resistant), cut
/// at a character boundary if it is longer.
fn slot_description(card_model: &str) -> String {
    card_model.chars().take(64).collect()
}

/// CK_TOKEN_INFO.model holds 16 characters, too few for the card's
/// description; the slot description carries that.
fn token_model(emulated: bool) -> &'static str {
    if emulated {
        "MeSign Emulator"
    } else {
        "MeSign HSM"
    }
}

fn record_of(object: &Object) -> ObjectRecord {
    ObjectRecord {
        attributes: attributes::to_list(&object.attrs),
        card_key: object.card_key.as_deref().cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::fake::FakeCard;
    use mesign_proto::attr::{bool_value, ulong_value};

    const APP: AppKey = AppKey { pid: 1, app: 1 };
    const OTHER: AppKey = AppKey { pid: 2, app: 1 };
    const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

    fn hsm(dir: &std::path::Path) -> (Hsm, Arc<FakeCard>) {
        let card = Arc::new(FakeCard::default());
        let slot = Slot::open(card.clone(), &dir.join("slot-0/token.redb")).unwrap();
        let pins = PinPolicy {
            max_attempts: 3,
            iterations: 1,
            ..PinPolicy::default()
        };
        (Hsm::new(pins, vec![slot]), card)
    }

    fn ok(h: &Hsm, app: AppKey, body: RequestBody) -> ReplyBody {
        h.handle(app, body.clone())
            .unwrap_or_else(|e| panic!("{body:?}: {e}"))
    }

    fn rv(h: &Hsm, app: AppKey, body: RequestBody) -> u64 {
        h.handle(app, body).expect_err("expected an error").rv()
    }

    fn a(ty: u64, value: Vec<u8>) -> Attribute {
        Attribute { ty, value }
    }

    fn open(h: &Hsm, app: AppKey, rw: bool) -> u64 {
        let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
        match ok(h, app, RequestBody::OpenSession { slot: 0, flags }) {
            ReplyBody::Session(s) => s,
            other => panic!("{other:?}"),
        }
    }

    /// Initialized token with user PIN "1234"; returns a user-logged-in RW
    /// session of APP.
    fn ready(h: &Hsm) -> u64 {
        h.connect(APP);
        h.connect(OTHER);
        let init = RequestBody::InitToken {
            slot: 0,
            so_pin: b"sopin".to_vec(),
            label: b"t".to_vec(),
        };
        ok(h, APP, init);
        let s = open(h, APP, true);
        ok(
            h,
            APP,
            RequestBody::Login {
                session: s,
                user_type: CKU_SO,
                pin: b"sopin".to_vec(),
            },
        );
        ok(
            h,
            APP,
            RequestBody::InitPin {
                session: s,
                pin: b"1234".to_vec(),
            },
        );
        ok(h, APP, RequestBody::Logout { session: s });
        ok(
            h,
            APP,
            RequestBody::Login {
                session: s,
                user_type: CKU_USER,
                pin: b"1234".to_vec(),
            },
        );
        s
    }

    fn ec_pair(h: &Hsm, session: u64, private: Vec<Attribute>) -> (u64, u64) {
        let body = RequestBody::GenerateKeyPair {
            session,
            mechanism: CKM_EC_KEY_PAIR_GEN,
            public_template: vec![
                a(CKA_EC_PARAMS, P256_OID.to_vec()),
                a(CKA_TOKEN, bool_value(true)),
            ],
            private_template: private,
        };
        match ok(h, APP, body) {
            ReplyBody::KeyPair { public, private } => (public, private),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_digest_info_the_card_does_not_sign_is_bad_data() {
        let dir = tempfile::tempdir().unwrap();
        let (h, card) = hsm(dir.path());
        let s = ready(&h);
        let body = RequestBody::GenerateKeyPair {
            session: s,
            mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
            public_template: vec![
                a(CKA_MODULUS_BITS, mesign_proto::attr::ulong_value(2048)),
                a(CKA_TOKEN, bool_value(true)),
            ],
            private_template: vec![],
        };
        let private = match ok(&h, APP, body) {
            ReplyBody::KeyPair { private, .. } => private,
            other => panic!("{other:?}"),
        };
        let sign = |mechanism, scheme| RequestBody::Sign {
            session: s,
            key: private,
            mechanism,
            scheme,
            input: vec![7; 35],
        };
        *card.fail_next.lock().unwrap() = Some(CardFailure::Fault(CardFault::BadParameters));
        assert_eq!(
            rv(&h, APP, sign(CKM_RSA_PKCS, SignScheme::RsaPkcs1DigestInfo)),
            CKR_DATA_INVALID
        );
        let pss = SignScheme::RsaPss {
            hash: mesign_proto::HashAlg::Sha256,
            mgf_hash: mesign_proto::HashAlg::Sha256,
            salt_len: 32,
        };
        *card.fail_next.lock().unwrap() = Some(CardFailure::Fault(CardFault::BadParameters));
        let digest_sign = RequestBody::Sign {
            session: s,
            key: private,
            mechanism: CKM_RSA_PKCS_PSS,
            scheme: pss,
            input: vec![7; 32],
        };
        assert_eq!(rv(&h, APP, digest_sign), CKR_MECHANISM_PARAM_INVALID);
    }

    #[test]
    fn token_setup_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = hsm(dir.path());
        h.connect(APP);
        assert_eq!(
            rv(
                &h,
                APP,
                RequestBody::OpenSession {
                    slot: 0,
                    flags: CKF_SERIAL_SESSION
                }
            ),
            CKR_TOKEN_NOT_RECOGNIZED
        );
        assert_eq!(
            rv(
                &h,
                APP,
                RequestBody::OpenSession {
                    slot: 5,
                    flags: CKF_SERIAL_SESSION
                }
            ),
            CKR_SLOT_ID_INVALID
        );
        let short = RequestBody::InitToken {
            slot: 0,
            so_pin: b"12".to_vec(),
            label: vec![],
        };
        assert_eq!(rv(&h, APP, short), CKR_PIN_LEN_RANGE);
        let s = ready(&h);
        assert_eq!(
            rv(&h, APP, RequestBody::OpenSession { slot: 0, flags: 0 }),
            CKR_SESSION_PARALLEL_NOT_SUPPORTED
        );
        let again = RequestBody::InitToken {
            slot: 0,
            so_pin: b"sopin".to_vec(),
            label: vec![],
        };
        assert_eq!(rv(&h, APP, again.clone()), CKR_SESSION_EXISTS);
        ok(&h, APP, RequestBody::CloseSession { session: s });
        let wrong = RequestBody::InitToken {
            slot: 0,
            so_pin: b"wrong".to_vec(),
            label: vec![],
        };
        assert_eq!(rv(&h, APP, wrong), CKR_PIN_INCORRECT);
        let info = match ok(&h, APP, RequestBody::TokenInfo { slot: 0 }) {
            ReplyBody::TokenInfo(t) => t,
            other => panic!("{other:?}"),
        };
        assert_ne!(info.flags & CKF_SO_PIN_COUNT_LOW, 0);
        assert_ne!(info.flags & CKF_USER_PIN_INITIALIZED, 0);
        ok(&h, APP, again);
        let info = match ok(&h, APP, RequestBody::TokenInfo { slot: 0 }) {
            ReplyBody::TokenInfo(t) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            info.flags & (CKF_USER_PIN_INITIALIZED | CKF_SO_PIN_COUNT_LOW),
            0
        );
        assert_eq!(info.label.len(), 32);
    }

    #[test]
    fn objects_follow_session_and_login_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = hsm(dir.path());
        let s = ready(&h);
        let ro = open(&h, APP, false);
        let data = |token: bool, private: bool| {
            vec![
                a(CKA_CLASS, ulong_value(CKO_DATA)),
                a(CKA_TOKEN, bool_value(token)),
                a(CKA_PRIVATE, bool_value(private)),
                a(CKA_LABEL, b"d".to_vec()),
            ]
        };
        let create = |session, t| RequestBody::CreateObject {
            session,
            template: t,
        };
        assert_eq!(
            rv(&h, APP, create(ro, data(true, false))),
            CKR_SESSION_READ_ONLY
        );
        let ReplyBody::Object(session_obj) = ok(&h, APP, create(ro, data(false, false))) else {
            panic!()
        };
        assert!(session_obj >= SESSION_OBJECT_BASE);
        let ReplyBody::Object(token_obj) = ok(&h, APP, create(s, data(true, true))) else {
            panic!()
        };
        assert!(objects::split_handle(token_obj).0 < SESSION_OBJECT_BASE);

        // Another application sees neither the private token object nor our
        // session object, and cannot create private objects.
        let theirs = open(&h, OTHER, true);
        let find = RequestBody::FindObjects {
            session: theirs,
            template: vec![a(CKA_LABEL, b"d".to_vec())],
        };
        assert_eq!(ok(&h, OTHER, find.clone()), ReplyBody::Objects(vec![]));
        assert_eq!(
            rv(&h, OTHER, create(theirs, data(false, true))),
            CKR_USER_NOT_LOGGED_IN
        );
        let get = RequestBody::GetAttributes {
            session: theirs,
            object: session_obj,
            types: vec![CKA_LABEL],
        };
        assert_eq!(rv(&h, OTHER, get), CKR_OBJECT_HANDLE_INVALID);

        let mine = RequestBody::FindObjects {
            session: s,
            template: vec![a(CKA_LABEL, b"d".to_vec())],
        };
        assert_eq!(
            ok(&h, APP, mine.clone()),
            ReplyBody::Objects(vec![token_obj, session_obj])
        );
        // Closing the owning session destroys its objects.
        ok(&h, APP, RequestBody::CloseSession { session: ro });
        assert_eq!(
            ok(&h, APP, mine.clone()),
            ReplyBody::Objects(vec![token_obj])
        );
        let frozen = RequestBody::SetAttributes {
            session: s,
            object: token_obj,
            template: vec![a(CKA_DESTROYABLE, bool_value(false))],
        };
        ok(&h, APP, frozen);
        assert_eq!(
            rv(
                &h,
                APP,
                RequestBody::DestroyObject {
                    session: s,
                    object: token_obj
                }
            ),
            CKR_ACTION_PROHIBITED
        );
        // Logging out hides private objects again.
        ok(&h, APP, RequestBody::Logout { session: s });
        assert_eq!(ok(&h, APP, mine), ReplyBody::Objects(vec![]));
        assert_eq!(
            rv(&h, APP, RequestBody::Logout { session: s }),
            CKR_USER_NOT_LOGGED_IN
        );
    }

    #[test]
    fn signing_checks_key_usage_and_maps_card_faults() {
        let dir = tempfile::tempdir().unwrap();
        let (h, card) = hsm(dir.path());
        let s = ready(&h);
        let (public, private) = ec_pair(
            &h,
            s,
            vec![a(
                CKA_ALLOWED_MECHANISMS,
                mesign_proto::attr::ulong_array_value(&[CKM_ECDSA]),
            )],
        );
        let sign = |key, mechanism, input: &[u8]| RequestBody::Sign {
            session: s,
            key,
            mechanism,
            scheme: SignScheme::Ecdsa,
            input: input.to_vec(),
        };
        assert_eq!(
            ok(&h, APP, sign(private, CKM_ECDSA, &[1; 32])),
            ReplyBody::Bytes(vec![1; 32])
        );
        let last = card.requests.lock().unwrap().last().cloned().unwrap();
        match last {
            CardRequest::Sign { policy, .. } => {
                assert_eq!(policy.object_id, objects::split_handle(private).0);
                assert!(policy.sign && policy.sensitive && !policy.extractable);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            rv(&h, APP, sign(private, CKM_ECDSA_SHA256, &[1; 32])),
            CKR_MECHANISM_INVALID
        );
        assert_eq!(
            rv(&h, APP, sign(public, CKM_ECDSA, &[1; 32])),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        assert_eq!(
            rv(&h, APP, sign(999, CKM_ECDSA, &[1; 32])),
            CKR_KEY_HANDLE_INVALID
        );
        *card.fail_next.lock().unwrap() = Some(CardFailure::Fault(
            pci_driver_shim::command::CardFault::BadInput,
        ));
        assert_eq!(
            rv(&h, APP, sign(private, CKM_ECDSA, &[1; 32])),
            CKR_DATA_INVALID
        );
        *card.fail_next.lock().unwrap() = Some(CardFailure::Gone);
        assert_eq!(
            rv(&h, APP, sign(private, CKM_ECDSA, &[1; 32])),
            CKR_DEVICE_REMOVED
        );

        let (_, no_sign) = ec_pair(&h, s, vec![a(CKA_SIGN, bool_value(false))]);
        assert_eq!(
            rv(&h, APP, sign(no_sign, CKM_ECDSA, &[1; 32])),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        let change = RequestBody::SetAttributes {
            session: s,
            object: no_sign,
            template: vec![a(CKA_SIGN, bool_value(true))],
        };
        assert_eq!(rv(&h, APP, change), CKR_ATTRIBUTE_READ_ONLY);
        let copy = RequestBody::CopyObject {
            session: s,
            object: no_sign,
            template: vec![],
        };
        assert_eq!(rv(&h, APP, copy), CKR_ACTION_PROHIBITED);

        ok(&h, APP, RequestBody::Logout { session: s });
        assert_eq!(
            rv(&h, APP, sign(private, CKM_ECDSA, &[1; 32])),
            CKR_KEY_HANDLE_INVALID,
            "logout invalidates private key handles"
        );
    }

    #[test]
    fn always_authenticate_keys_sign_once_per_context_login() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = hsm(dir.path());
        let s = ready(&h);
        let other = open(&h, APP, true);
        let (_, key) = ec_pair(
            &h,
            s,
            vec![
                a(CKA_ALWAYS_AUTHENTICATE, bool_value(true)),
                a(CKA_TOKEN, bool_value(true)),
            ],
        );
        let (_, plain) = ec_pair(&h, s, vec![]);
        let sign = |session, key| RequestBody::Sign {
            session,
            key,
            mechanism: CKM_ECDSA,
            scheme: SignScheme::Ecdsa,
            input: vec![2; 32],
        };
        let context = |session, pin: &[u8]| RequestBody::Login {
            session,
            user_type: CKU_CONTEXT_SPECIFIC,
            pin: pin.to_vec(),
        };
        ok(&h, APP, sign(s, plain));
        assert_eq!(rv(&h, APP, sign(s, key)), CKR_USER_NOT_LOGGED_IN);
        assert_eq!(rv(&h, APP, context(s, b"9999")), CKR_PIN_INCORRECT);
        let ReplyBody::TokenInfo(info) = ok(&h, APP, RequestBody::TokenInfo { slot: 0 }) else {
            panic!()
        };
        assert_ne!(
            info.flags & CKF_USER_PIN_COUNT_LOW,
            0,
            "a wrong context PIN counts"
        );
        ok(&h, APP, context(s, b"1234"));
        assert_eq!(
            rv(&h, APP, sign(other, key)),
            CKR_USER_NOT_LOGGED_IN,
            "the grant belongs to the session that logged in"
        );
        ok(&h, APP, sign(s, key));
        assert_eq!(
            rv(&h, APP, sign(s, key)),
            CKR_USER_NOT_LOGGED_IN,
            "one signature per context login"
        );
        ok(&h, APP, context(s, b"1234"));
        ok(&h, APP, RequestBody::Logout { session: s });
        assert_eq!(
            rv(&h, APP, context(s, b"1234")),
            CKR_USER_NOT_LOGGED_IN,
            "context login needs a user login"
        );
        ok(
            &h,
            APP,
            RequestBody::Login {
                session: s,
                user_type: CKU_USER,
                pin: b"1234".to_vec(),
            },
        );
        assert_eq!(
            rv(&h, APP, sign(s, key)),
            CKR_KEY_HANDLE_INVALID,
            "a private handle from before the logout stays invalid"
        );
        let find = RequestBody::FindObjects {
            session: s,
            template: vec![a(CKA_ALWAYS_AUTHENTICATE, bool_value(true))],
        };
        let ReplyBody::Objects(found) = ok(&h, APP, find) else {
            panic!()
        };
        assert_eq!(found.len(), 1);
        assert_eq!(
            rv(&h, APP, sign(s, found[0])),
            CKR_USER_NOT_LOGGED_IN,
            "logout dropped the unused grant"
        );
        ok(&h, APP, context(s, b"1234"));
        let drop = RequestBody::DropContextLogin { session: s };
        ok(&h, APP, drop.clone());
        assert_eq!(
            rv(&h, APP, sign(s, found[0])),
            CKR_USER_NOT_LOGGED_IN,
            "the module dropped the grant of an operation that ended without it"
        );
        ok(&h, APP, drop);
        assert_eq!(
            rv(&h, OTHER, RequestBody::DropContextLogin { session: s }),
            CKR_SESSION_HANDLE_INVALID
        );
    }

    #[test]
    fn private_handles_die_at_logout_and_objects_come_back_under_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = hsm(dir.path());
        let s = ready(&h);
        let (public, private) = ec_pair(&h, s, vec![a(CKA_TOKEN, bool_value(true))]);
        let data = |token: bool| RequestBody::CreateObject {
            session: s,
            template: vec![
                a(CKA_CLASS, ulong_value(CKO_DATA)),
                a(CKA_TOKEN, bool_value(token)),
                a(CKA_PRIVATE, bool_value(true)),
                a(CKA_LABEL, b"relogin".to_vec()),
            ],
        };
        let ReplyBody::Object(token_data) = ok(&h, APP, data(true)) else {
            panic!()
        };
        let ReplyBody::Object(session_data) = ok(&h, APP, data(false)) else {
            panic!()
        };
        let get = |object| RequestBody::GetAttributes {
            session: s,
            object,
            types: vec![CKA_LABEL],
        };
        let sign = |key| RequestBody::Sign {
            session: s,
            key,
            mechanism: CKM_ECDSA,
            scheme: SignScheme::Ecdsa,
            input: vec![3; 32],
        };
        let find = |template: Vec<Attribute>| match ok(
            &h,
            APP,
            RequestBody::FindObjects {
                session: s,
                template,
            },
        ) {
            ReplyBody::Objects(found) => found,
            other => panic!("{other:?}"),
        };
        let login = RequestBody::Login {
            session: s,
            user_type: CKU_USER,
            pin: b"1234".to_vec(),
        };
        // Handles found are the handles handed out at creation.
        assert_eq!(
            find(vec![a(CKA_LABEL, b"relogin".to_vec())]),
            vec![token_data, session_data]
        );
        ok(&h, APP, sign(private));

        ok(&h, APP, RequestBody::Logout { session: s });
        ok(&h, APP, login.clone());
        for object in [private, token_data, session_data] {
            assert_eq!(rv(&h, APP, get(object)), CKR_OBJECT_HANDLE_INVALID);
        }
        assert_eq!(rv(&h, APP, sign(private)), CKR_KEY_HANDLE_INVALID);
        assert_eq!(
            rv(
                &h,
                APP,
                RequestBody::DestroyObject {
                    session: s,
                    object: token_data
                }
            ),
            CKR_OBJECT_HANDLE_INVALID
        );
        // Public handles are untouched; the private session object is gone
        // for good; the token objects are found under new handles that work.
        ok(&h, APP, get(public));
        let again = find(vec![a(CKA_LABEL, b"relogin".to_vec())]);
        assert_eq!(again.len(), 1, "the private session object was destroyed");
        assert_ne!(again[0], token_data);
        assert_eq!(
            objects::split_handle(again[0]).0,
            objects::split_handle(token_data).0
        );
        ok(&h, APP, get(again[0]));
        let key = find(vec![a(CKA_CLASS, ulong_value(CKO_PRIVATE_KEY))]);
        assert_eq!(key.len(), 1);
        ok(&h, APP, sign(key[0]));
        // Another application's login has its own generation.
        let theirs = open(&h, OTHER, true);
        let their_login = RequestBody::Login {
            session: theirs,
            user_type: CKU_USER,
            pin: b"1234".to_vec(),
        };
        ok(&h, OTHER, their_login);
        let get_theirs = RequestBody::GetAttributes {
            session: theirs,
            object: key[0],
            types: vec![CKA_LABEL],
        };
        assert_eq!(rv(&h, OTHER, get_theirs), CKR_OBJECT_HANDLE_INVALID);

        // Closing the last session ends the login just as C_Logout does.
        ok(&h, APP, RequestBody::CloseSession { session: s });
        let s = open(&h, APP, true);
        let login = RequestBody::Login {
            session: s,
            user_type: CKU_USER,
            pin: b"1234".to_vec(),
        };
        ok(&h, APP, login);
        let stale = RequestBody::GetAttributes {
            session: s,
            object: key[0],
            types: vec![CKA_LABEL],
        };
        assert_eq!(rv(&h, APP, stale), CKR_OBJECT_HANDLE_INVALID);
    }

    #[test]
    fn token_model_fits_and_slot_keeps_the_long_description() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = hsm(dir.path());
        h.connect(APP);
        let ReplyBody::TokenInfo(info) = ok(&h, APP, RequestBody::TokenInfo { slot: 0 }) else {
            panic!()
        };
        assert!(info.model.len() <= 16, "{:?}", info.model);
        assert_eq!(info.model, "MeSign Emulator");
        let ReplyBody::Slots(slots) = ok(&h, APP, RequestBody::Slots) else {
            panic!()
        };
        assert_eq!(slots[0].description, "fake card");
        let long = "x".repeat(70) + "é";
        assert_eq!(slot_description(&long).chars().count(), 64);
    }

    #[test]
    fn state_survives_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (private, failures_flag) = {
            let (h, _) = hsm(dir.path());
            let s = ready(&h);
            let (_, private) = ec_pair(&h, s, vec![a(CKA_TOKEN, bool_value(true))]);
            ok(&h, APP, RequestBody::Logout { session: s });
            let wrong = RequestBody::Login {
                session: s,
                user_type: CKU_USER,
                pin: b"9999".to_vec(),
            };
            assert_eq!(rv(&h, APP, wrong), CKR_PIN_INCORRECT);
            (objects::split_handle(private).0, CKF_USER_PIN_COUNT_LOW)
        };
        let (h, _) = hsm(dir.path());
        h.connect(APP);
        let ReplyBody::TokenInfo(info) = ok(&h, APP, RequestBody::TokenInfo { slot: 0 }) else {
            panic!()
        };
        assert_ne!(
            info.flags & failures_flag,
            0,
            "the failure counter is persisted"
        );
        let s = open(&h, APP, true);
        ok(
            &h,
            APP,
            RequestBody::Login {
                session: s,
                user_type: CKU_USER,
                pin: b"1234".to_vec(),
            },
        );
        let ReplyBody::TokenInfo(info) = ok(&h, APP, RequestBody::TokenInfo { slot: 0 }) else {
            panic!()
        };
        assert_eq!(
            info.flags & failures_flag,
            0,
            "a correct PIN resets the counter"
        );
        // A private handle lives as long as the login it was found under;
        // the key itself is found again.
        let find = RequestBody::FindObjects {
            session: s,
            template: vec![a(CKA_CLASS, ulong_value(CKO_PRIVATE_KEY))],
        };
        let ReplyBody::Objects(found) = ok(&h, APP, find) else {
            panic!()
        };
        assert_eq!(found.len(), 1);
        assert_eq!(objects::split_handle(found[0]).0, private);
        let get = RequestBody::GetAttributes {
            session: s,
            object: found[0],
            types: vec![CKA_VALUE, CKA_SIGN],
        };
        assert_eq!(
            ok(&h, APP, get),
            ReplyBody::Attributes(vec![
                AttributeValue::Sensitive,
                AttributeValue::Value(bool_value(true))
            ])
        );
        // New handles never collide with stored ones.
        let (public2, _) = ec_pair(&h, s, vec![]);
        assert!(public2 > private);
    }

    #[test]
    fn concurrent_creations_share_commits_and_all_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let created: Vec<u64> = {
            let (h, _) = hsm(dir.path());
            let s = ready(&h);
            let h = &h;
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..8)
                    .map(|t| {
                        scope.spawn(move || {
                            (0..25)
                                .map(|i| {
                                    let body = RequestBody::CreateObject {
                                        session: s,
                                        template: vec![
                                            a(CKA_CLASS, ulong_value(CKO_DATA)),
                                            a(CKA_TOKEN, bool_value(true)),
                                            a(CKA_LABEL, b"many".to_vec()),
                                            a(CKA_VALUE, format!("{t}/{i}").into_bytes()),
                                        ],
                                    };
                                    match ok(h, APP, body) {
                                        ReplyBody::Object(handle) => handle,
                                        other => panic!("{other:?}"),
                                    }
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap())
                    .collect()
            })
        };
        let mut unique = created.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 200, "object ids were handed out twice");

        let (h, _) = hsm(dir.path());
        h.connect(APP);
        let s = open(&h, APP, true);
        let find = RequestBody::FindObjects {
            session: s,
            template: vec![a(CKA_LABEL, b"many".to_vec())],
        };
        assert_eq!(ok(&h, APP, find), ReplyBody::Objects(unique.clone()));
        // Every value made it, each once.
        let mut values: Vec<Vec<u8>> = unique
            .iter()
            .map(|&object| {
                let get = RequestBody::GetAttributes {
                    session: s,
                    object,
                    types: vec![CKA_VALUE],
                };
                match ok(&h, APP, get) {
                    ReplyBody::Attributes(v) => match &v[0] {
                        AttributeValue::Value(bytes) => bytes.clone(),
                        other => panic!("{other:?}"),
                    },
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        values.sort();
        values.dedup();
        assert_eq!(values.len(), 200);
        // New ids stay above every stored one.
        let body = RequestBody::CreateObject {
            session: s,
            template: vec![
                a(CKA_CLASS, ulong_value(CKO_DATA)),
                a(CKA_TOKEN, bool_value(true)),
            ],
        };
        let ReplyBody::Object(next) = ok(&h, APP, body) else {
            panic!()
        };
        assert!(next > *unique.last().unwrap());
    }
}
