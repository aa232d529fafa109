//! Many client processes at once: objects one process creates are visible
//! to another at once, and processes × threads generate keys and sign
//! concurrently with zero errors and no handle confusion.
//!
//! Worker processes are this test binary run again (`current_exe`) with
//! `STRESS_WORKER` set, selecting the `worker` test; they load the module
//! by path and reach the same daemon (or SoftHSM token directory) through
//! the environment the parent set. Each worker thread verifies every
//! signature with RustCrypto against the public key of the pair it
//! generated itself, so a handle that pointed at another process's key
//! would fail verification.

use std::process::Command;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::target::pin;
use softhsm_tests::verify::{sha256, Curve};
use softhsm_tests::{conformance, Divergence, Target, USER_PIN};

conformance!(ready =>
    objects_of_one_process_are_visible_to_another_at_once,
    processes_and_threads_sign_concurrently,
);

const WORKER: &str = "STRESS_WORKER";
const MODULE: &str = "STRESS_MODULE";
const SLOT: &str = "STRESS_TOKEN_LABEL";
const THREADS: &str = "STRESS_THREADS";
const SECONDS: &str = "STRESS_RUN_SECONDS";
const LABEL: &str = "STRESS_LABEL";
/// Overrides the stress duration against our module (default: the minute
/// the conformance goal names).
const STRESS_SECONDS: &str = "MESIGN_STRESS_SECONDS";

/// Runs `mode` in a child process of this test binary and returns its
/// output; panics with that output when the child fails.
fn spawn_worker(t: &Target, mode: &str, extra: &[(&str, String)]) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
        .env(WORKER, mode)
        .env(MODULE, &t.library().path)
        .env(SLOT, t.token_label());
    for (k, v) in extra {
        command.env(k, v);
    }
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a worker process")
}

fn finish(child: std::process::Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait for a worker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains("worker done"),
        "{what} did not run the worker:\n{text}"
    );
    text
}

fn objects_of_one_process_are_visible_to_another_at_once(t: &Target) {
    let s = t.user_session();
    let label = format!("concurrency-visible-{}", t.kind().name());
    let mine = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("C_CreateObject");
    let child = spawn_worker(t, "visibility", &[(LABEL, label.clone())]);
    finish(child, "visibility worker");
    // The child created `<label>-child` and exited; it is here already.
    let theirs = keys::find(
        &s,
        &[Attribute::Label(format!("{label}-child").into_bytes())],
    );
    assert_eq!(theirs.len(), 1, "the other process's object");
    for h in [mine, theirs[0]] {
        s.destroy_object(h).expect("C_DestroyObject");
    }
}

fn processes_and_threads_sign_concurrently(t: &Target) {
    // Make sure the token is set up (and, for ours, the daemon runs) before
    // the workers come.
    drop(t.user_session());
    let (processes, threads, seconds) = if t.diverges(Divergence::SoftHsmMultiProcessStress) {
        // Even two SoftHSM processes fail now and then on a loaded machine
        // (C_Login: CKR_USER_PIN_NOT_INITIALIZED while the other process
        // rewrites the token file), so it runs threads in one process only.
        (1, 2, 3)
    } else {
        let seconds = std::env::var(STRESS_SECONDS)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60u64);
        (8, 4, seconds)
    };
    let children: Vec<_> = (0..processes)
        .map(|i| {
            spawn_worker(
                t,
                "stress",
                &[
                    (THREADS, threads.to_string()),
                    (SECONDS, seconds.to_string()),
                    (LABEL, format!("concurrency-{}-{i}", t.kind().name())),
                ],
            )
        })
        .collect();
    let mut signatures = 0u64;
    for (i, child) in children.into_iter().enumerate() {
        let text = finish(child, &format!("stress worker {i}"));
        let count: u64 = text
            .lines()
            .find_map(|l| l.split("signatures verified: ").nth(1))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("worker {i} reported no count:\n{text}"));
        assert!(count > 0, "worker {i} signed nothing");
        signatures += count;
    }
    eprintln!(
        "{}: {processes} processes x {threads} threads, {seconds} s: {signatures} signatures verified",
        t.kind().name()
    );
}

/// The entry point of worker processes; does nothing in a normal run.
#[test]
fn worker() {
    let Ok(mode) = std::env::var(WORKER) else {
        return;
    };
    let module = std::env::var(MODULE).expect("module path");
    let token = std::env::var(SLOT).unwrap();
    let pkcs11 = Pkcs11::new(&module).expect("load the module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    let slots = pkcs11.get_slots_with_token().unwrap();
    // Found by label: SoftHSM numbers a token's slot differently in the
    // process that initialized it.
    let slot = *slots
        .iter()
        .find(|s| pkcs11.get_token_info(**s).is_ok_and(|i| i.label() == token))
        .unwrap_or_else(|| panic!("the parent's token {token:?} among {slots:?}"));
    let label = std::env::var(LABEL).unwrap();
    match mode.as_str() {
        "visibility" => visibility_worker(&pkcs11, slot, &label),
        "stress" => {
            let threads: usize = std::env::var(THREADS).unwrap().parse().unwrap();
            let seconds: u64 = std::env::var(SECONDS).unwrap().parse().unwrap();
            stress_worker(&pkcs11, slot, &label, threads, Duration::from_secs(seconds));
        }
        other => panic!("unknown worker mode {other}"),
    }
    pkcs11.finalize().expect("C_Finalize");
    println!("worker done");
}

fn visibility_worker(pkcs11: &Pkcs11, slot: Slot, label: &str) {
    let s = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    let found = keys::find(&s, &[Attribute::Label(label.as_bytes().to_vec())]);
    assert_eq!(found.len(), 1, "the parent's object, seen from a child");
    s.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Label(format!("{label}-child").into_bytes()),
    ])
    .expect("C_CreateObject in the child");
}

fn stress_worker(pkcs11: &Pkcs11, slot: Slot, label: &str, threads: usize, run: Duration) {
    let login = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    login
        .login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user C_Login");
    let deadline = Instant::now() + run;
    let total: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|n| {
                let label = format!("{label}-{n}");
                scope.spawn(move || stress_thread(pkcs11, slot, &label, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a stress thread panicked"))
            .sum()
    });
    drop(login);
    println!("signatures verified: {total}");
}

fn stress_thread(pkcs11: &Pkcs11, slot: Slot, label: &str, deadline: Instant) -> u64 {
    let s = pkcs11.open_rw_session(slot).expect("C_OpenSession");
    let spec = KeySpec::Ec(Curve::P256);
    let mut verified = 0;
    let mut round = 0u64;
    while Instant::now() < deadline || round == 0 {
        let (public, private) = s
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(false),
                    Attribute::EcParams(Curve::P256.params_der()),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
                &[
                    Attribute::Token(false),
                    Attribute::Private(true),
                    Attribute::Sign(true),
                    Attribute::Label(label.as_bytes().to_vec()),
                ],
            )
            .unwrap_or_else(|e| panic!("{label}: C_GenerateKeyPair in round {round}: {e}"));
        let key = keys::public_key(&s, spec, public);
        for i in 0..8u64 {
            let hash = sha256(format!("{label} round {round} message {i}").as_bytes());
            let signature = s
                .sign(&Mechanism::Ecdsa, private, &hash)
                .unwrap_or_else(|e| panic!("{label}: C_Sign in round {round}: {e}"));
            key.verify_ecdsa_prehash(&hash, &signature)
                .unwrap_or_else(|e| panic!("{label}: signature {i} of round {round}: {e:?}"));
            verified += 1;
        }
        s.destroy_object(private).expect("C_DestroyObject");
        s.destroy_object(public).expect("C_DestroyObject");
        round += 1;
    }
    verified
}
