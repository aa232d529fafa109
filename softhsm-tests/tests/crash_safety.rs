//! Crash safety: SIGKILL the daemon, or the card process under it, at
//! random moments while a client generates key pairs, imports certificates,
//! creates data objects and deletes them; restart and check the store.
//!
//! After every restart: every operation acknowledged to the client is there
//! and works (keys sign, verified with the `p256` crate against the public
//! key the client was given), nothing half-written exists (every private key
//! has its public key and signs; data and certificates carry their whole
//! value), deleted objects never come back, and the store file opens without
//! repair (a copy is opened with redb before the restart; the daemon commits
//! with redb's quick repair, so needing the full repair walk is a failure).
//! An operation cut short by the kill is "in doubt": it may or may not have
//! happened, but whatever the store then shows must be complete, and from
//! then on it is held to the same rules.
//!
//! A killed card process is replaced by the daemon without a restart (see
//! `card_recovery.rs`), so a card kill between card commands may cut no
//! operation at all; the loop then ends once key generation works again.
//!
//! The kill moments come from a seeded xorshift, so a failure names its seed
//! (`CRASH_SEED=n` reruns it). Bounded to about 25 seconds in all. Ours only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use softhsm_tests::daemon::Daemon;
use softhsm_tests::keys;
use softhsm_tests::standalone::{card_pid, init_token, load_module, only_slot};
use softhsm_tests::target::pin;
use softhsm_tests::verify::{assert_genuine, sha256, Curve, PublicKey};
use softhsm_tests::{TEST_CERTIFICATE, USER_PIN};

/// How long the kill loop runs.
const BUDGET: Duration = Duration::from_secs(20);
/// Kills land this long after the workload starts, uniformly.
const KILL_WINDOW_MS: (u64, u64) = (20, 700);

/// A small xorshift64*: reproducible kill moments without a new crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the client was told exists.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// A key pair; `public` is the point the client read after generation
    /// (None when the kill came between generation and that read).
    Key {
        private: bool,
        public: bool,
        point: Option<Vec<u8>>,
    },
    Data(Vec<u8>),
    Certificate,
}

#[derive(Debug, Default)]
struct Model {
    present: BTreeMap<String, Entry>,
    deleted: BTreeSet<String>,
    in_doubt: BTreeSet<String>,
    next: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Victim {
    Daemon,
    Card,
}

struct Fixture {
    dir: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    restarts: u32,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("crash-safety-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let socket = dir.join("hsmd.sock");
        // Read by the module at C_Initialize; this file's only test is the
        // only thread that loads it.
        std::env::set_var("MESIGN_HSM_SOCKET", &socket);
        Fixture {
            state: dir.join("state"),
            socket,
            dir,
            restarts: 0,
        }
    }

    fn start(&mut self) -> Daemon {
        self.restarts += 1;
        Daemon::start(
            &self.state,
            &self.socket,
            &self.dir.join(format!("hsmd-{}.log", self.restarts)),
        )
    }
}

#[test]
fn acknowledged_operations_survive_kills() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash_safety seed {seed} (rerun with CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let mut fixture = Fixture::new();
    let mut model = Model::default();
    let mut stats = BTreeMap::<&str, u32>::new();
    let started = Instant::now();
    let mut epoch = 0u32;
    let mut first = true;
    while started.elapsed() < BUDGET || epoch < 4 {
        epoch += 1;
        let daemon = fixture.start();
        let pkcs11 = load_module();
        let slot = only_slot(&pkcs11);
        if first {
            init_token(&pkcs11, slot, "crash");
            first = false;
        }
        let session = pkcs11.open_rw_session(slot).expect("C_OpenSession");
        session
            .login(UserType::User, Some(&pin(USER_PIN)))
            .expect("user login");
        check_store(&session, &mut model, seed, &daemon);

        let victim = if epoch % 2 == 0 {
            Victim::Card
        } else {
            Victim::Daemon
        };
        let target = match victim {
            Victim::Daemon => daemon.pid(),
            Victim::Card => card_pid(daemon.pid()).expect("the daemon's card process"),
        };
        let delay = Duration::from_millis(
            KILL_WINDOW_MS.0 + rng.below(KILL_WINDOW_MS.1 - KILL_WINDOW_MS.0),
        );
        let killed = Arc::new(AtomicBool::new(false));
        let killer = {
            let killed = Arc::clone(&killed);
            std::thread::spawn(move || {
                // The random moment of the crash, not a wait for readiness.
                std::thread::sleep(delay);
                kill(Pid::from_raw(target as i32), Signal::SIGKILL).expect("SIGKILL");
                killed.store(true, Ordering::Release);
            })
        };
        let done = workload(&session, &mut model, &mut rng, &killed, victim);
        *stats.entry(done).or_default() += 1;
        killer.join().expect("killer thread");
        drop(session);
        // The module must come back from a dead daemon without hanging.
        let _ = pkcs11.finalize();
        match victim {
            Victim::Daemon => {
                daemon.kill();
                probe_store_copy(&fixture.state, seed, &mut stats);
            }
            Victim::Card => {
                let status = daemon.stop();
                assert!(status.success(), "daemon without its card exited {status}");
            }
        }
    }
    // A last restart checks the outcome of the last kill.
    let daemon = fixture.start();
    let pkcs11 = load_module();
    let session = pkcs11
        .open_rw_session(only_slot(&pkcs11))
        .expect("C_OpenSession");
    session
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user login");
    check_store(&session, &mut model, seed, &daemon);
    drop(session);
    pkcs11.finalize().expect("C_Finalize");
    daemon.stop();
    let keys = model
        .present
        .values()
        .filter(|e| matches!(e, Entry::Key { .. }))
        .count();
    eprintln!(
        "crash_safety: {epoch} kills, {} objects alive ({keys} key pairs), {} deleted; {stats:?}",
        model.present.len(),
        model.deleted.len()
    );
    assert!(
        model.deleted.len() + model.present.len() > 10,
        "the loop did too little work to mean anything: {model:?}"
    );
    let _ = std::fs::remove_dir_all(&fixture.dir);
}

/// Runs operations until one fails (the kill landed); returns what was cut.
/// The daemon replaces a killed card by itself, so a card kill that landed
/// between card commands may cut nothing: then the loop ends once key
/// generations work again after the kill.
fn workload(
    session: &Session,
    model: &mut Model,
    rng: &mut Rng,
    killed: &AtomicBool,
    victim: Victim,
) -> &'static str {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut keygens_after_kill = 0;
    loop {
        assert!(
            Instant::now() < deadline,
            "the kill never reached the client"
        );
        if victim == Victim::Card && keygens_after_kill >= 2 {
            return "nothing (card replaced)";
        }
        let kill_seen = killed.load(Ordering::Acquire);
        let n = model.next;
        model.next += 1;
        let choice = rng.below(8);
        let outcome = match choice {
            0..=2 => generate(session, model, format!("k{n}")).map(|()| "keygen"),
            3 | 4 => create_data(session, model, format!("d{n}"), rng).map(|()| "data"),
            5 => create_certificate(session, model, format!("c{n}")).map(|()| "certificate"),
            _ => delete_one(session, model, rng).map(|()| "delete"),
        };
        match outcome {
            Ok("keygen") if kill_seen => keygens_after_kill += 1,
            Ok(_) => continue,
            Err((what, e)) => {
                assert_failure_after_kill(&e, killed);
                return what;
            }
        }
    }
}

type OpError = (&'static str, Error);

#[track_caller]
fn assert_failure_after_kill(e: &Error, killed: &AtomicBool) {
    let allowed = matches!(
        e,
        Error::Pkcs11(
            RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed,
            _
        )
    );
    assert!(
        allowed,
        "an operation failed with {e} (killed: {})",
        killed.load(Ordering::Acquire)
    );
}

fn generate(session: &Session, model: &mut Model, label: String) -> Result<(), OpError> {
    model.in_doubt.insert(label.clone());
    let id = label.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Label(id.clone()),
        Attribute::Id(id.clone()),
        Attribute::EcParams(Curve::P256.params_der()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
        Attribute::Label(id.clone()),
        Attribute::Id(id),
    ];
    let (public_handle, _) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(|e| ("keygen", e))?;
    model.in_doubt.remove(&label);
    model.present.insert(
        label.clone(),
        Entry::Key {
            private: true,
            public: true,
            point: None,
        },
    );
    let point = ec_point(session, public_handle).map_err(|e| ("read public key", e))?;
    if let Some(Entry::Key { point: p, .. }) = model.present.get_mut(&label) {
        *p = Some(point);
    }
    Ok(())
}

fn ec_point(session: &Session, public: ObjectHandle) -> Result<Vec<u8>, Error> {
    let attrs = session.get_attributes(public, &[AttributeType::EcPoint])?;
    match attrs.first() {
        Some(Attribute::EcPoint(der)) => {
            Ok(softhsm_tests::verify::ec_point_from_attribute(der).expect("CKA_EC_POINT parses"))
        }
        other => panic!("no CKA_EC_POINT: {other:?}"),
    }
}

fn create_data(
    session: &Session,
    model: &mut Model,
    label: String,
    rng: &mut Rng,
) -> Result<(), OpError> {
    let value: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.next() as u8).collect();
    model.in_doubt.insert(label.clone());
    session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(value.clone()),
        ])
        .map_err(|e| ("data", e))?;
    model.in_doubt.remove(&label);
    model.present.insert(label, Entry::Data(value));
    Ok(())
}

fn create_certificate(session: &Session, model: &mut Model, label: String) -> Result<(), OpError> {
    let subject =
        softhsm_tests::der::certificate_subject(TEST_CERTIFICATE).expect("certificate subject");
    model.in_doubt.insert(label.clone());
    session
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
            Attribute::Subject(subject),
            Attribute::Value(TEST_CERTIFICATE.to_vec()),
        ])
        .map_err(|e| ("certificate", e))?;
    model.in_doubt.remove(&label);
    model.present.insert(label, Entry::Certificate);
    Ok(())
}

/// Deletes one acknowledged object; a key pair goes private half first, so
/// a private key without its public key is never the client's doing.
fn delete_one(session: &Session, model: &mut Model, rng: &mut Rng) -> Result<(), OpError> {
    if model.present.is_empty() {
        return Ok(());
    }
    let index = rng.below(model.present.len() as u64) as usize;
    let label = model
        .present
        .keys()
        .nth(index)
        .expect("index in range")
        .clone();
    let entry = model.present[&label].clone();
    let find = |class| {
        session.find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
    };
    model.in_doubt.insert(label.clone());
    match entry {
        Entry::Key { private, .. } => {
            if private {
                for h in find(ObjectClass::PRIVATE_KEY).map_err(|e| ("find", e))? {
                    session.destroy_object(h).map_err(|e| ("delete", e))?;
                }
                if let Some(Entry::Key { private, .. }) = model.present.get_mut(&label) {
                    *private = false;
                }
            }
            for h in find(ObjectClass::PUBLIC_KEY).map_err(|e| ("find", e))? {
                session.destroy_object(h).map_err(|e| ("delete", e))?;
            }
        }
        Entry::Data(_) | Entry::Certificate => {
            let class = if matches!(entry, Entry::Data(_)) {
                ObjectClass::DATA
            } else {
                ObjectClass::CERTIFICATE
            };
            for h in find(class).map_err(|e| ("find", e))? {
                session.destroy_object(h).map_err(|e| ("delete", e))?;
            }
        }
    }
    model.in_doubt.remove(&label);
    model.present.remove(&label);
    model.deleted.insert(label);
    Ok(())
}

/// Everything the store shows, by label: (class, handle) pairs.
fn inventory(session: &Session) -> BTreeMap<String, Vec<(ObjectClass, ObjectHandle)>> {
    let mut out = BTreeMap::<String, Vec<_>>::new();
    for handle in session.find_objects(&[]).expect("C_FindObjects") {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Class, AttributeType::Label])
            .expect("class and label");
        let mut class = None;
        let mut label = None;
        for a in attrs {
            match a {
                Attribute::Class(c) => class = Some(c),
                Attribute::Label(l) => label = Some(String::from_utf8(l).expect("label")),
                _ => {}
            }
        }
        out.entry(label.expect("every object has a label"))
            .or_default()
            .push((class.expect("every object has a class"), handle));
    }
    out
}

fn check_store(session: &Session, model: &mut Model, seed: u64, daemon: &Daemon) {
    let context = || format!("seed {seed}; daemon log:\n{}", daemon.log_text());
    let found = inventory(session);
    for (label, objects) in &found {
        let acknowledged = model.present.contains_key(label);
        assert!(
            acknowledged || model.in_doubt.contains(label),
            "object {label} ({objects:?}) was never acknowledged, or came back after deletion; {}",
            context()
        );
        assert!(
            !model.deleted.contains(label),
            "deleted object {label} came back; {}",
            context()
        );
    }
    for label in model.present.keys() {
        assert!(
            found.contains_key(label) || model.in_doubt.contains(label),
            "acknowledged object {label} ({:?}) is missing; {}",
            model.present[label],
            context()
        );
    }
    // Hold every object to its rules, and settle what was in doubt.
    for label in std::mem::take(&mut model.in_doubt) {
        match found.get(&label) {
            None => {
                model.present.remove(&label);
                model.deleted.insert(label);
            }
            Some(objects) => {
                let has = |c| objects.iter().any(|(class, _)| *class == c);
                let entry = if has(ObjectClass::PUBLIC_KEY) || has(ObjectClass::PRIVATE_KEY) {
                    let point = match model.present.get(&label) {
                        Some(Entry::Key { point, .. }) => point.clone(),
                        _ => None,
                    };
                    Entry::Key {
                        private: has(ObjectClass::PRIVATE_KEY),
                        public: has(ObjectClass::PUBLIC_KEY),
                        point,
                    }
                } else if has(ObjectClass::DATA) {
                    let value = objects
                        .iter()
                        .find_map(|(_, h)| keys::bytes(session, *h, AttributeType::Value))
                        .expect("a data object has a value");
                    Entry::Data(value)
                } else {
                    Entry::Certificate
                };
                model.present.insert(label, entry);
            }
        }
    }
    for (label, entry) in &mut model.present {
        let objects = &found[label];
        let handle = |c| {
            let hs: Vec<_> = objects.iter().filter(|(class, _)| *class == c).collect();
            assert!(
                hs.len() <= 1,
                "{label}: {} objects of class {c:?}",
                hs.len()
            );
            hs.first().map(|(_, h)| *h)
        };
        match entry {
            Entry::Key {
                private,
                public,
                point,
            } => {
                let private_handle = handle(ObjectClass::PRIVATE_KEY);
                let public_handle = handle(ObjectClass::PUBLIC_KEY);
                assert_eq!(private_handle.is_some(), *private, "{label}: private half");
                assert_eq!(public_handle.is_some(), *public, "{label}: public half");
                let Some(public_handle) = public_handle else {
                    assert!(
                        private_handle.is_none(),
                        "{label}: private key without public key"
                    );
                    continue;
                };
                let stored = ec_point(session, public_handle).expect("read CKA_EC_POINT");
                if let Some(known) = point {
                    assert_eq!(&stored, known, "{label}: public key changed");
                }
                *point = Some(stored.clone());
                if let Some(private_handle) = private_handle {
                    let hash = sha256(label.as_bytes());
                    let sig = session
                        .sign(&Mechanism::Ecdsa, private_handle, &hash)
                        .unwrap_or_else(|e| panic!("{label} does not sign: {e}; {}", context()));
                    let key = PublicKey::Ec {
                        curve: Curve::P256,
                        point: stored,
                    };
                    assert_genuine(label, &hash, |h| key.verify_ecdsa_prehash(h, &sig));
                }
            }
            Entry::Data(value) => {
                let h = handle(ObjectClass::DATA).expect("data object");
                assert_eq!(
                    keys::bytes(session, h, AttributeType::Value).as_ref(),
                    Some(&*value),
                    "{label}: data value"
                );
            }
            Entry::Certificate => {
                let h = handle(ObjectClass::CERTIFICATE).expect("certificate object");
                assert_eq!(
                    keys::bytes(session, h, AttributeType::Value).as_deref(),
                    Some(TEST_CERTIFICATE),
                    "{label}: certificate value"
                );
            }
        }
    }
}

/// Opens a copy of each store file as the daemon will on restart, and fails
/// when an open needed redb's repair (an unclean shutdown without
/// quick-repair allocator state makes redb walk the whole file).
fn probe_store_copy(state: &Path, seed: u64, stats: &mut BTreeMap<&'static str, u32>) {
    let files = files_with_extension(state, "redb");
    assert!(!files.is_empty(), "no store file under {}", state.display());
    for file in files {
        let copy = file.with_extension("probe");
        std::fs::copy(&file, &copy).expect("copy the store");
        let repaired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&repaired);
        let opened = redb::Builder::new()
            .set_repair_callback(move |_| flag.store(true, Ordering::Release))
            .create(&copy);
        if let Err(e) = opened {
            panic!(
                "the store {} does not open after SIGKILL: {e}",
                file.display()
            );
        }
        drop(opened);
        let _ = std::fs::remove_file(&copy);
        assert!(
            !repaired.load(Ordering::Acquire),
            "the store {} needed a repair after SIGKILL (seed {seed})",
            file.display()
        );
        *stats.entry("store opened without repair").or_default() += 1;
    }
}

fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read state dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    out
}
