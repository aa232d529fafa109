//! The audit log of one slot: an append-only, hash-chained file
//! (`STATE_DIR/slot-N/audit.log`) of administrative and key-management
//! events and of signing volume per key.
//!
//! Format: one record per line, a JSON object without the line feed:
//! `{"seq":N,"time":UNIX_SECONDS,"event":KIND,"pid":PID,"detail":{...},
//! "prev":HEX}`. `seq` counts from 0; `prev` is the SHA-256 (hex) of the
//! previous record's bytes as they are on disk (without the line feed), 64
//! zeros for the first record. Editing, removing or reordering a record
//! breaks the chain at or right after it; cutting off the tail does not, so
//! operators compare the head hash `mesign-hsm audit verify` prints with one
//! noted earlier.
//!
//! Admin events are written and fsynced before the request is answered.
//! Signatures are only counted in memory (no file write on the signing
//! path); a background thread writes one `signatures` record per key every
//! [`FLUSH_INTERVAL`] or after [`FLUSH_COUNT`] signatures, and
//! [`Audit::flush`] writes the rest at shutdown.
//!
//! A failed audit write is logged as an error and does not undo or fail the
//! operation, which is already committed to the token store by then.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

/// Signing volume is written at least this often while keys sign.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// ... or after this many signatures, whichever comes first.
pub const FLUSH_COUNT: u64 = 10_000;
/// How often the flusher looks at the counters.
const TICK: Duration = Duration::from_secs(1);
/// A reply must fit a frame: records beyond this many bytes are left for
/// the next read.
const READ_BUDGET: usize = 512 * 1024;

/// Who a PIN belongs to, as written in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    So,
    User,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::So => "so",
            Role::User => "user",
        }
    }
}

/// An object as the log names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectName {
    pub handle: u64,
    pub class: Option<u64>,
    pub label: Vec<u8>,
    pub id: Vec<u8>,
}

impl ObjectName {
    fn json(&self) -> Value {
        json!({
            "handle": self.handle,
            "class": self.class,
            "label": String::from_utf8_lossy(&self.label),
            "id": hex(&self.id),
        })
    }
}

/// One thing worth recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TokenInit {
        label: Vec<u8>,
    },
    LoginFailure {
        role: Role,
        failures: u32,
    },
    PinLocked {
        role: Role,
    },
    Login {
        role: Role,
    },
    PinInitialized,
    PinChanged {
        role: Role,
    },
    KeyGenerated {
        private: ObjectName,
        public: u64,
    },
    CertificateImported(ObjectName),
    ObjectCreated(ObjectName),
    ObjectDestroyed(ObjectName),
    Signatures {
        key: ObjectName,
        count: u64,
    },
    /// C_WrapKey: `key` left the card, encrypted under `wrapping` with
    /// `mechanism`.
    KeyWrapped {
        key: ObjectName,
        wrapping: ObjectName,
        mechanism: &'static str,
    },
    /// The card made a new cloning domain (`domain create`).
    DomainCreated {
        domain_id: Vec<u8>,
        shares: usize,
    },
    /// The card joined a cloning domain (`domain join`).
    DomainJoined {
        domain_id: Vec<u8>,
    },
    /// `domain tls-cert`: the card's domain CA signed a certificate.
    TlsCertificateSigned {
        tbs_sha256: Vec<u8>,
    },
    BackupExported {
        objects: usize,
    },
    BackupImported {
        restored: u64,
        skipped: usize,
    },
    /// A token object's change was acknowledged by peer box `peer`.
    ReplicationSent {
        peer: String,
        unique_id: String,
        version: u64,
        deleted: bool,
    },
    /// A peer box's change of a token object was applied here.
    ReplicationApplied {
        unique_id: String,
        version: u64,
        deleted: bool,
    },
    /// A peer box's change was not applied: this box holds a newer
    /// version, or applying it failed (`reason`).
    ReplicationRefused {
        unique_id: String,
        version: u64,
        reason: String,
    },
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::TokenInit { .. } => "token_init",
            Event::LoginFailure { .. } => "login_failure",
            Event::PinLocked { .. } => "pin_locked",
            Event::Login { .. } => "login",
            Event::PinInitialized => "pin_initialized",
            Event::PinChanged { .. } => "pin_changed",
            Event::KeyGenerated { .. } => "key_generated",
            Event::CertificateImported(_) => "certificate_imported",
            Event::ObjectCreated(_) => "object_created",
            Event::ObjectDestroyed(_) => "object_destroyed",
            Event::Signatures { .. } => "signatures",
            Event::KeyWrapped { .. } => "key_wrapped",
            Event::DomainCreated { .. } => "domain_created",
            Event::DomainJoined { .. } => "domain_joined",
            Event::TlsCertificateSigned { .. } => "tls_certificate_signed",
            Event::BackupExported { .. } => "backup_exported",
            Event::BackupImported { .. } => "backup_imported",
            Event::ReplicationSent { .. } => "replication_sent",
            Event::ReplicationApplied { .. } => "replication_applied",
            Event::ReplicationRefused { .. } => "replication_refused",
        }
    }

    fn detail(&self) -> Value {
        match self {
            Event::TokenInit { label } => {
                json!({"label": String::from_utf8_lossy(label).trim_end()})
            }
            Event::LoginFailure { role, failures } => {
                json!({"user": role.name(), "failures": failures})
            }
            Event::PinLocked { role } | Event::Login { role } | Event::PinChanged { role } => {
                json!({"user": role.name()})
            }
            Event::PinInitialized => json!({"user": "user"}),
            Event::KeyGenerated { private, public } => {
                let mut v = private.json();
                v["public_handle"] = json!(public);
                v
            }
            Event::CertificateImported(o) | Event::ObjectCreated(o) | Event::ObjectDestroyed(o) => {
                o.json()
            }
            Event::Signatures { key, count } => {
                let mut v = key.json();
                v["count"] = json!(count);
                v
            }
            Event::KeyWrapped {
                key,
                wrapping,
                mechanism,
            } => {
                let mut v = key.json();
                v["wrapping_key"] = wrapping.json();
                v["mechanism"] = json!(mechanism);
                v
            }
            Event::DomainCreated { domain_id, shares } => {
                json!({"domain_id": hex(domain_id), "shares": shares})
            }
            Event::DomainJoined { domain_id } => json!({"domain_id": hex(domain_id)}),
            Event::TlsCertificateSigned { tbs_sha256 } => json!({"tbs_sha256": hex(tbs_sha256)}),
            Event::BackupExported { objects } => json!({"objects": objects}),
            Event::BackupImported { restored, skipped } => {
                json!({"restored": restored, "skipped": skipped})
            }
            Event::ReplicationSent {
                peer,
                unique_id,
                version,
                deleted,
            } => {
                json!({"peer": peer, "unique_id": unique_id, "version": version, "deleted": deleted})
            }
            Event::ReplicationApplied {
                unique_id,
                version,
                deleted,
            } => json!({"unique_id": unique_id, "version": version, "deleted": deleted}),
            Event::ReplicationRefused {
                unique_id,
                version,
                reason,
            } => json!({"unique_id": unique_id, "version": version, "reason": reason}),
        }
    }
}

/// One record as serialised; field order is the on-disk order.
#[derive(Serialize)]
struct Record<'a> {
    seq: u64,
    time: u64,
    event: &'a str,
    pid: Option<i32>,
    detail: Value,
    prev: String,
}

/// Why the log could not be opened or read.
#[derive(Debug)]
pub enum AuditError {
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for AuditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditError::Io(path, e) => write!(f, "audit log {}: {e}", path.display()),
        }
    }
}

/// The end of the chain: where the next record goes and what it commits to.
struct Chain {
    file: File,
    next_seq: u64,
    prev: [u8; 32],
}

/// Signatures counted since the last `signatures` records.
struct Pending {
    keys: HashMap<u64, (ObjectName, u64)>,
    total: u64,
    since: Instant,
    stop: bool,
}

struct Inner {
    path: PathBuf,
    chain: Mutex<Chain>,
    pending: Mutex<Pending>,
    wake: Condvar,
}

/// The audit log of one slot.
pub struct Audit {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Audit {
    /// Opens (or creates) the log at `path` and starts its flusher. A last
    /// line without a line feed is a record whose write was cut short by a
    /// crash, never acknowledged: it is cut off (and the cut logged).
    pub fn open(path: &Path) -> Result<Audit, AuditError> {
        let io = |e| AuditError::Io(path.to_owned(), e);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        if !text.is_empty() && !text.ends_with(b"\n") {
            let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            tracing::warn!(path = %path.display(), cut = text.len() - keep, "audit log ends in a torn record; cutting it off");
            file.set_len(keep as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
            text.truncate(keep);
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let (next_seq, prev) = match lines.last() {
            None => (0, [0; 32]),
            Some(last) => {
                let seq = serde_json::from_slice::<Value>(last)
                    .ok()
                    .and_then(|v| v["seq"].as_u64());
                (seq.map_or(lines.len() as u64, |s| s + 1), sha256(last))
            }
        };
        let inner = Arc::new(Inner {
            path: path.to_owned(),
            chain: Mutex::new(Chain {
                file,
                next_seq,
                prev,
            }),
            pending: Mutex::new(Pending {
                keys: HashMap::new(),
                total: 0,
                since: Instant::now(),
                stop: false,
            }),
            wake: Condvar::new(),
        });
        let flusher = inner.clone();
        std::thread::Builder::new()
            .name("audit-flush".into())
            .spawn(move || flusher.run_flusher())
            .map_err(io)?;
        Ok(Audit { inner })
    }

    /// Appends `event` durably.
    pub fn record(&self, pid: Option<i32>, event: &Event) {
        self.inner.append(pid, event);
    }

    /// Counts one signature by key `handle`; `name` is asked only for the
    /// first signature of a key since the last flush.
    pub fn count_signature(&self, handle: u64, name: impl FnOnce() -> ObjectName) {
        let mut pending = lock(&self.inner.pending);
        pending.keys.entry(handle).or_insert_with(|| (name(), 0)).1 += 1;
        pending.total += 1;
        if pending.total >= FLUSH_COUNT {
            self.inner.wake.notify_one();
        }
    }

    /// Writes the pending signature counts now.
    pub fn flush(&self) {
        self.inner.flush_signatures();
    }

    /// Up to `max` records from record number `from`, as on disk (without
    /// the line feed), within a reply's size budget.
    pub fn read(&self, from: u64, max: u32) -> Result<Vec<Vec<u8>>, AuditError> {
        let chain = lock(&self.inner.chain);
        let io = |e| AuditError::Io(self.inner.path.clone(), e);
        let mut file = chain.file.try_clone().map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        drop(chain);
        let mut out = Vec::new();
        let mut size = 0;
        for line in text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
            .take(max as usize)
        {
            size += line.len() + 16;
            if size > READ_BUDGET && !out.is_empty() {
                break;
            }
            out.push(line.to_vec());
        }
        Ok(out)
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        lock(&self.inner.pending).stop = true;
        self.inner.wake.notify_one();
        self.inner.flush_signatures();
    }
}

impl Inner {
    fn append(&self, pid: Option<i32>, event: &Event) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut chain = lock(&self.chain);
        let record = Record {
            seq: chain.next_seq,
            time,
            event: event.kind(),
            pid,
            detail: event.detail(),
            prev: hex(&chain.prev),
        };
        let mut line = serde_json::to_vec(&record).expect("a record always serialises");
        let hash = sha256(&line);
        line.push(b'\n');
        let written = chain
            .file
            .write_all(&line)
            .and_then(|()| chain.file.sync_data());
        match written {
            Ok(()) => {
                chain.next_seq += 1;
                chain.prev = hash;
            }
            // The chain stays where it was: a partly written line is cut
            // off when the daemon next opens the log.
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, event = event.kind(), "cannot write the audit log")
            }
        }
    }

    fn flush_signatures(&self) {
        let keys = {
            let mut pending = lock(&self.pending);
            pending.total = 0;
            pending.since = Instant::now();
            std::mem::take(&mut pending.keys)
        };
        let mut keys: Vec<_> = keys.into_values().collect();
        keys.sort_by_key(|(name, _)| name.handle);
        for (key, count) in keys {
            self.append(None, &Event::Signatures { key, count });
        }
    }

    fn run_flusher(&self) {
        loop {
            let due = {
                let pending = lock(&self.pending);
                let (pending, _) = self
                    .wake
                    .wait_timeout(pending, TICK)
                    .unwrap_or_else(|e| e.into_inner());
                if pending.stop {
                    return;
                }
                pending.total >= FLUSH_COUNT
                    || (pending.total > 0 && pending.since.elapsed() >= FLUSH_INTERVAL)
            };
            if due {
                self.flush_signatures();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn domain_backup_and_replication_events_are_named_with_their_details() {
        let cases = [
            (
                Event::DomainCreated {
                    domain_id: vec![0xab; 2],
                    shares: 3,
                },
                "domain_created",
                json!({"domain_id": "abab", "shares": 3}),
            ),
            (
                Event::BackupImported {
                    restored: 5,
                    skipped: 1,
                },
                "backup_imported",
                json!({"restored": 5, "skipped": 1}),
            ),
            (
                Event::ReplicationSent {
                    peer: "b:7443".into(),
                    unique_id: "u1".into(),
                    version: 2,
                    deleted: true,
                },
                "replication_sent",
                json!({"peer": "b:7443", "unique_id": "u1", "version": 2, "deleted": true}),
            ),
            (
                Event::ReplicationRefused {
                    unique_id: "u1".into(),
                    version: 1,
                    reason: "newer".into(),
                },
                "replication_refused",
                json!({"unique_id": "u1", "version": 1, "reason": "newer"}),
            ),
        ];
        for (event, kind, detail) in cases {
            assert_eq!(event.kind(), kind);
            assert_eq!(event.detail(), detail);
        }
    }

    #[test]
    fn records_chain_and_survive_reopening_and_torn_tails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        {
            let audit = Audit::open(&path).unwrap();
            audit.record(Some(7), &Event::PinInitialized);
            audit.count_signature(3, || ObjectName {
                handle: 3,
                label: b"k".to_vec(),
                ..ObjectName::default()
            });
            audit.count_signature(3, || panic!("name asked twice"));
        }
        // A crash in the middle of a write.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":2,")
            .unwrap();
        let audit = Audit::open(&path).unwrap();
        audit.record(None, &Event::Login { role: Role::So });
        let records = audit.read(0, 10).unwrap();
        let text = lines(&path);
        assert_eq!(text.len(), 3);
        let mut prev = [0u8; 32];
        for (i, raw) in records.iter().enumerate() {
            assert_eq!(raw, text[i].as_bytes());
            let v: Value = serde_json::from_slice(raw).unwrap();
            assert_eq!(v["seq"], i as u64);
            assert_eq!(v["prev"], hex(&prev));
            prev = sha256(raw);
        }
        let sigs: Value = serde_json::from_slice(&records[1]).unwrap();
        assert_eq!(sigs["event"], "signatures");
        assert_eq!(sigs["detail"]["count"], 2);
        assert_eq!(sigs["detail"]["label"], "k");
        assert_eq!(audit.read(2, 10).unwrap().len(), 1);
        assert_eq!(audit.read(1, 1).unwrap(), vec![records[1].clone()]);
    }
}
