//! End-to-end tests of the card interface against the real `mesign-card-emu`
//! process. Every signature is verified with RustCrypto (`p256`, `rsa`), an
//! implementation independent of the card's aws-lc-rs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use pci_driver_shim::command::{
    CardFault, CardRequest, CardResponse, Curve, Hash, KeyPolicy, KeySpec, PublicKey, SignScheme,
};
use pci_driver_shim::{connect_emulator, spawn_emulator, Card, CardError, EmulatorProcess};
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mesign-card-emu"))
}

fn start(state_dir: &Path) -> (EmulatorProcess, Card) {
    let (process, device) = spawn_emulator(exe(), state_dir).expect("emulator starts");
    let card = Card::open(device).expect("card opens");
    (process, card)
}

fn policy(object_id: u64, spec: KeySpec) -> KeyPolicy {
    KeyPolicy {
        object_id,
        spec,
        sign: true,
        decrypt: false,
        unwrap: false,
        derive: false,
        sensitive: true,
        extractable: false,
        secret: None,
    }
}

fn generate(card: &Card, policy: &KeyPolicy) -> (Vec<u8>, PublicKey) {
    match card
        .call(&CardRequest::GenerateKeyPair {
            policy: policy.clone(),
        })
        .unwrap()
    {
        CardResponse::KeyPair { blob, public } => (blob, public),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn sign(
    card: &Card,
    blob: &[u8],
    policy: &KeyPolicy,
    scheme: SignScheme,
    input: &[u8],
) -> Result<Vec<u8>, CardError> {
    let request = CardRequest::Sign {
        blob: blob.to_vec(),
        policy: policy.clone(),
        scheme,
        input: input.to_vec(),
    };
    match card.call(&request)? {
        CardResponse::Bytes(sig) => Ok(sig),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn p256_verifier(public: &PublicKey) -> p256::ecdsa::VerifyingKey {
    let PublicKey::Ec {
        curve: Curve::P256,
        point,
    } = public
    else {
        panic!("not P-256")
    };
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap()
}

fn verify_p256(public: &PublicKey, prehash: &[u8], sig: &[u8]) -> bool {
    let sig = p256::ecdsa::Signature::from_slice(sig).unwrap();
    p256_verifier(public).verify_prehash(prehash, &sig).is_ok()
}

fn rsa_public(public: &PublicKey) -> RsaPublicKey {
    let PublicKey::Rsa { modulus, exponent } = public else {
        panic!("not RSA")
    };
    RsaPublicKey::new(
        BigUint::from_bytes_be(modulus),
        BigUint::from_bytes_be(exponent),
    )
    .unwrap()
}

fn fault(result: Result<Vec<u8>, CardError>) -> CardFault {
    match result {
        Err(CardError::Fault(fault)) => fault,
        other => panic!("expected a card fault, got {other:?}"),
    }
}

#[test]
fn p256_and_rsa2048_signatures_verify_independently() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, card) = start(dir.path());
    assert!(card.info().operational);
    assert!(card.info().emulated);
    assert_eq!(card.info().serial.len(), 16);
    assert!(card.describe().contains("emulator"));

    let ec = policy(1, KeySpec::Ec(Curve::P256));
    let (blob, public) = generate(&card, &ec);
    let digest = Sha256::digest(b"a document");
    let sig = sign(&card, &blob, &ec, SignScheme::Ecdsa, &digest).unwrap();
    assert_eq!(sig.len(), 64);
    assert!(verify_p256(&public, &digest, &sig));
    assert!(!verify_p256(
        &public,
        &Sha256::digest(b"another document"),
        &sig
    ));
    // A SHA-384 hash is truncated to its leftmost 32 bytes, as ECDSA says.
    let long = Sha384::digest(b"a document");
    let sig = sign(&card, &blob, &ec, SignScheme::Ecdsa, &long).unwrap();
    assert!(verify_p256(&public, &long[..32], &sig));

    let rsa_policy = policy(2, KeySpec::Rsa { bits: 2048 });
    let (blob, public) = generate(&card, &rsa_policy);
    let key = rsa_public(&public);
    let PublicKey::Rsa { exponent, .. } = &public else {
        unreachable!()
    };
    assert_eq!(exponent, &[1, 0, 1]);
    let sig = sign(
        &card,
        &blob,
        &rsa_policy,
        SignScheme::RsaPkcs1(Hash::Sha256),
        &digest,
    )
    .unwrap();
    key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .unwrap();
    assert!(key
        .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(b"x"), &sig)
        .is_err());

    // The same signature through a DigestInfo (CKM_RSA_PKCS style).
    let mut digest_info = vec![
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    digest_info.extend_from_slice(&digest);
    let sig2 = sign(
        &card,
        &blob,
        &rsa_policy,
        SignScheme::RsaPkcs1DigestInfo,
        &digest_info,
    )
    .unwrap();
    assert_eq!(sig, sig2, "PKCS#1 v1.5 is deterministic");
    digest_info.push(0);
    let bad = sign(
        &card,
        &blob,
        &rsa_policy,
        SignScheme::RsaPkcs1DigestInfo,
        &digest_info,
    );
    assert_eq!(fault(bad), CardFault::BadInput);

    let pss = SignScheme::RsaPss {
        hash: Hash::Sha256,
        mgf_hash: Hash::Sha256,
        salt_len: 32,
    };
    let sig = sign(&card, &blob, &rsa_policy, pss, &digest).unwrap();
    key.verify(Pss::new::<Sha256>(), &digest, &sig).unwrap();
}

#[test]
fn edited_policy_or_forbidden_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, card) = start(dir.path());
    let original = policy(10, KeySpec::Ec(Curve::P256));
    let (blob, _) = generate(&card, &original);
    let digest = [7u8; 32];
    assert!(sign(&card, &blob, &original, SignScheme::Ecdsa, &digest).is_ok());

    // Moving the blob to another object, or loosening an attribute, breaks
    // the binding even though the key is in the card's cache.
    let moved = KeyPolicy {
        object_id: 11,
        ..original.clone()
    };
    assert_eq!(
        fault(sign(&card, &blob, &moved, SignScheme::Ecdsa, &digest)),
        CardFault::BadBlob
    );
    let loosened = KeyPolicy {
        extractable: true,
        ..original.clone()
    };
    assert_eq!(
        fault(sign(&card, &blob, &loosened, SignScheme::Ecdsa, &digest)),
        CardFault::BadBlob
    );
    let mut tampered = blob.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        fault(sign(
            &card,
            &tampered,
            &original,
            SignScheme::Ecdsa,
            &digest
        )),
        CardFault::BadBlob
    );

    // A key generated without the sign permission cannot sign.
    let no_sign = KeyPolicy {
        sign: false,
        ..policy(12, KeySpec::Ec(Curve::P256))
    };
    let (blob, _) = generate(&card, &no_sign);
    assert_eq!(
        fault(sign(&card, &blob, &no_sign, SignScheme::Ecdsa, &digest)),
        CardFault::NotPermitted
    );
    // ...and granting it by editing the policy does not open the blob.
    let granted = KeyPolicy {
        sign: true,
        ..no_sign.clone()
    };
    assert_eq!(
        fault(sign(&card, &blob, &granted, SignScheme::Ecdsa, &digest)),
        CardFault::BadBlob
    );
}

#[test]
fn concurrent_signing_from_eight_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, card) = start(dir.path());
    let ec = policy(20, KeySpec::Ec(Curve::P256));
    let (blob, public) = generate(&card, &ec);
    std::thread::scope(|scope| {
        for thread in 0..8u8 {
            let (card, blob, ec, public) = (&card, &blob, &ec, &public);
            scope.spawn(move || {
                for i in 0..100u8 {
                    let digest = Sha256::digest([thread, i]);
                    let sig = sign(card, blob, ec, SignScheme::Ecdsa, &digest).unwrap();
                    assert!(
                        verify_p256(public, &digest, &sig),
                        "thread {thread} call {i}"
                    );
                }
            });
        }
    });
}

/// Batches larger than the ring (64 slots) go in parts, answers come back
/// in request order, and a bad command fails alone: three threads post
/// batches of 100 signatures with every 10th one over a forbidden key.
#[test]
fn batches_answer_in_order_and_fail_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, card) = start(dir.path());
    let ec = policy(21, KeySpec::Ec(Curve::P256));
    let (blob, public) = generate(&card, &ec);
    let mut no_sign = policy(22, KeySpec::Ec(Curve::P256));
    no_sign.sign = false;
    let (forbidden_blob, _) = generate(&card, &no_sign);
    std::thread::scope(|scope| {
        for thread in 0..3u8 {
            let (card, blob, forbidden_blob, ec, no_sign, public) =
                (&card, &blob, &forbidden_blob, &ec, &no_sign, &public);
            scope.spawn(move || {
                let digests: Vec<_> = (0..100u8).map(|i| Sha256::digest([thread, i])).collect();
                let requests: Vec<_> = digests
                    .iter()
                    .enumerate()
                    .map(|(i, digest)| {
                        let (blob, policy) = if i % 10 == 9 {
                            (forbidden_blob, no_sign)
                        } else {
                            (blob, ec)
                        };
                        CardRequest::Sign {
                            blob: blob.clone(),
                            policy: policy.clone(),
                            scheme: SignScheme::Ecdsa,
                            input: digest.to_vec(),
                        }
                    })
                    .collect();
                let answers = card.call_batch(&requests);
                assert_eq!(answers.len(), 100);
                for (i, answer) in answers.into_iter().enumerate() {
                    if i % 10 == 9 {
                        assert!(
                            matches!(answer, Err(CardError::Fault(CardFault::NotPermitted))),
                            "thread {thread} command {i}: {answer:?}"
                        );
                        continue;
                    }
                    let Ok(CardResponse::Bytes(sig)) = answer else {
                        panic!("thread {thread} command {i}: {answer:?}")
                    };
                    assert!(
                        verify_p256(public, &digests[i], &sig),
                        "thread {thread} command {i}"
                    );
                }
            });
        }
    });
}

/// With polling workers (the host then skips most doorbells) every answer
/// still arrives and verifies: a lost doorbell would stall a call.
#[test]
fn polling_card_workers_lose_no_submission() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, card) = start_with_env(dir.path(), "MESIGN_CARD_SPIN_US", "200");
    let ec = policy(21, KeySpec::Ec(Curve::P256));
    let (blob, public) = generate(&card, &ec);
    std::thread::scope(|scope| {
        for thread in 0..3u8 {
            let (card, blob, ec, public) = (&card, &blob, &ec, &public);
            scope.spawn(move || {
                for i in 0..150u8 {
                    let digest = Sha256::digest([thread, i, 0x5c]);
                    let sig = sign(card, blob, ec, SignScheme::Ecdsa, &digest).unwrap();
                    assert!(
                        verify_p256(public, &digest, &sig),
                        "thread {thread} call {i}"
                    );
                }
            });
        }
    });
}

#[test]
fn master_key_survives_restart_and_stays_private() {
    let dir = tempfile::tempdir().unwrap();
    let rsa_policy = policy(30, KeySpec::Rsa { bits: 2048 });
    let ec = policy(31, KeySpec::Ec(Curve::P384));
    let (serial, rsa_blob, rsa_pub, ec_blob, ec_pub) = {
        let (_emu, card) = start(dir.path());
        let (rsa_blob, rsa_pub) = generate(&card, &rsa_policy);
        let (ec_blob, ec_pub) = generate(&card, &ec);
        (
            card.info().serial.clone(),
            rsa_blob,
            rsa_pub,
            ec_blob,
            ec_pub,
        )
    };

    let state = dir.path().join("card-state");
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "card-state mode {mode:o}");

    // PKCS#8 of a key embeds its public half; a blob holding the key in
    // clear would contain it.
    let PublicKey::Rsa { modulus, .. } = &rsa_pub else {
        panic!("not RSA")
    };
    let PublicKey::Ec { point, .. } = &ec_pub else {
        panic!("not EC")
    };
    assert!(!contains(&rsa_blob, &modulus[..32]));
    assert!(!contains(&ec_blob, &point[1..33]));
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !contains(&bytes, &modulus[..32]),
                "{} holds key material",
                path.display()
            );
        }
    }

    let (_emu, card) = start(dir.path());
    assert_eq!(card.info().serial, serial);
    let digest = Sha256::digest(b"after restart");
    let sig = sign(
        &card,
        &rsa_blob,
        &rsa_policy,
        SignScheme::RsaPkcs1(Hash::Sha256),
        &digest,
    )
    .unwrap();
    rsa_public(&rsa_pub)
        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .unwrap();
    let sig = sign(
        &card,
        &ec_blob,
        &ec,
        SignScheme::Ecdsa,
        &Sha384::digest(b"x"),
    )
    .unwrap();
    assert_eq!(sig.len(), 96);

    // A different card (another state dir) cannot open these blobs.
    let other = tempfile::tempdir().unwrap();
    let (_emu2, other_card) = start(other.path());
    assert_ne!(other_card.info().serial, serial);
    assert_eq!(
        fault(sign(
            &other_card,
            &ec_blob,
            &ec,
            SignScheme::Ecdsa,
            &[1; 48]
        )),
        CardFault::BadBlob
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Starts the emulator by hand (to set its environment) and waits for it.
struct ManualEmulator(Child);

impl Drop for ManualEmulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_with_env(state_dir: &Path, key: &str, value: &str) -> (ManualEmulator, Card) {
    let socket: PathBuf = state_dir.join("card.sock");
    let child = Command::new(exe())
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--listen")
        .arg(&socket)
        .env(key, value)
        .spawn()
        .unwrap();
    let emu = ManualEmulator(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connect_emulator(&socket) {
            Ok(device) => return (emu, Card::open(device).unwrap()),
            Err(e) if Instant::now() > deadline => panic!("emulator never listened: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn failed_self_test_refuses_service() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, card) = start_with_env(dir.path(), "MESIGN_CARD_EMU_FAIL_SELFTEST", "1");
    assert!(!card.info().operational);
    let result = card.call(&CardRequest::Random { len: 16 });
    assert!(
        matches!(result, Err(CardError::Fault(CardFault::SelfTestFailed))),
        "{result:?}"
    );
    let result = card.call(&CardRequest::GenerateKeyPair {
        policy: policy(40, KeySpec::Ec(Curve::P256)),
    });
    assert!(
        matches!(result, Err(CardError::Fault(CardFault::SelfTestFailed))),
        "{result:?}"
    );
}

#[test]
fn killed_emulator_gives_gone_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let (mut emu, card) = start(dir.path());
    assert!(
        matches!(card.call(&CardRequest::Random { len: 8 }), Ok(CardResponse::Bytes(b)) if b.len() == 8)
    );
    emu.kill();
    let started = Instant::now();
    let result = card.call(&CardRequest::Random { len: 8 });
    assert!(
        matches!(result, Err(CardError::Gone | CardError::Timeout { .. })),
        "unexpected {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(11));
    // Once noticed, the card stays gone.
    let result = card.call(&CardRequest::Info);
    assert!(
        matches!(result, Err(CardError::Gone)),
        "unexpected {result:?}"
    );
}

/// The watchdog notices a card that dies while nobody calls it, so the
/// daemon can bring it back before the next command.
#[test]
fn idle_card_found_gone_without_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let (mut emu, card) = start(dir.path());
    assert!(!card.is_gone());
    emu.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !card.is_gone() {
        assert!(
            Instant::now() < deadline,
            "a dead idle card still looks alive"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(
        card.call(&CardRequest::Info),
        Err(CardError::Gone)
    ));
}

#[test]
fn one_host_at_a_time_and_the_next_after_detach() {
    let dir = tempfile::tempdir().unwrap();
    let (emu, card) = start(dir.path());
    let second = std::thread::spawn({
        let socket = emu.socket().to_path_buf();
        move || connect_emulator(&socket).map(|_| ())
    });
    // While the first host stays attached, the second is refused.
    let result = second.join().unwrap();
    assert!(
        matches!(result, Err(CardError::Busy { .. })),
        "unexpected {result:?}"
    );
    let serial = card.info().serial.clone();
    drop(card);
    let device = connect_emulator(emu.socket()).expect("the card accepts the next host");
    let card = Card::open(device).unwrap();
    assert_eq!(card.info().serial, serial);
    let result = card.call(&CardRequest::Random { len: 32 });
    assert!(matches!(result, Ok(CardResponse::Bytes(b)) if b.len() == 32));
}

#[test]
fn sigterm_stops_the_emulator_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut emu, card) = start_with_env(dir.path(), "RUST_LOG", "info");
    let socket = dir.path().join("card.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let pid = nix::unistd::Pid::from_raw(emu.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = emu.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "emulator ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
    assert!(!socket.exists(), "socket left behind");
    let result = card.call(&CardRequest::Info);
    assert!(
        matches!(result, Err(CardError::Gone)),
        "unexpected {result:?}"
    );
}

#[test]
fn every_key_size_and_curve_signs() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, card) = start(dir.path());
    let digest = Sha384::digest(b"every size");
    for (id, bits) in [(50, 3072), (51, 4096)] {
        let p = policy(id, KeySpec::Rsa { bits });
        let (blob, public) = generate(&card, &p);
        let sig = sign(
            &card,
            &blob,
            &p,
            SignScheme::RsaPkcs1(Hash::Sha384),
            &digest,
        )
        .unwrap();
        assert_eq!(sig.len() * 8, bits as usize);
        rsa_public(&public)
            .verify(Pkcs1v15Sign::new::<Sha384>(), &digest, &sig)
            .unwrap();
    }
    for (id, curve) in [(52, Curve::P384), (53, Curve::P521)] {
        let p = policy(id, KeySpec::Ec(curve));
        let (blob, public) = generate(&card, &p);
        let PublicKey::Ec { point, .. } = &public else {
            panic!("not EC")
        };
        assert_eq!(point.len(), 1 + 2 * curve.scalar_len());
        let sig = sign(&card, &blob, &p, SignScheme::Ecdsa, &digest).unwrap();
        assert_eq!(sig.len(), 2 * curve.scalar_len());
    }
    // P-521 takes hashes up to 64 bytes, not more.
    let p = policy(54, KeySpec::Ec(Curve::P521));
    let (blob, _) = generate(&card, &p);
    assert_eq!(
        fault(sign(&card, &blob, &p, SignScheme::Ecdsa, &[1; 65])),
        CardFault::BadInput
    );
    let too_big = policy(55, KeySpec::Rsa { bits: 1024 });
    let result = card.call(&CardRequest::GenerateKeyPair { policy: too_big });
    assert!(
        matches!(result, Err(CardError::Fault(CardFault::BadParameters))),
        "{result:?}"
    );
}

/// Whether `pid` still runs (a zombie waiting for its new parent counts as
/// gone).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn emulator_ends_with_its_killed_parent() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("card.sock");
    // A shell stands in for the daemon: it starts the card tied to itself,
    // prints the card's pid and waits.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" --state-dir "$1" --listen "$2" --parent-pid $$ & echo $!; wait"#)
        .arg(exe())
        .arg(dir.path())
        .arg(&socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(parent.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let card: u32 = line.trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "emulator never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(running(card));
    parent.kill().unwrap();
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(card) {
        assert!(
            Instant::now() < deadline,
            "emulator outlived its killed parent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn emulator_refuses_to_start_for_a_parent_that_is_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(exe())
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(dir.path().join("card.sock"))
        .arg("--parent-pid")
        .arg("1")
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(!dir.path().join("card.sock").exists());
}

#[test]
fn reset_card_is_gone_until_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults");
    let (_emu, card) = start_with_env(
        dir.path(),
        "MESIGN_CARD_EMU_FAULTS",
        faults.to_str().unwrap(),
    );
    let p = policy(60, KeySpec::Ec(Curve::P256));
    let (blob, public) = generate(&card, &p);
    std::fs::write(&faults, "reset\n").unwrap();
    let started = Instant::now();
    let result = card.call(&CardRequest::Random { len: 8 });
    assert!(matches!(result, Err(CardError::Gone)), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a reset took {:?} to notice",
        started.elapsed()
    );
    assert!(card.is_gone());
    // The card is back after its reset: a new session, and the key made
    // before the reset still signs.
    let card = card.reopen().expect("reattach after the reset");
    assert!(!card.is_gone());
    let prehash = Sha256::digest(b"after a reset").to_vec();
    let sig = sign(&card, &blob, &p, SignScheme::Ecdsa, &prehash).expect("sign");
    assert!(verify_p256(&public, &prehash, &sig));
}

#[test]
fn dropped_corrupt_and_tampered_answers_at_the_card_level() {
    let dir = tempfile::tempdir().unwrap();
    let faults = dir.path().join("faults");
    let (_emu, card) = start_with_env(
        dir.path(),
        "MESIGN_CARD_EMU_FAULTS",
        faults.to_str().unwrap(),
    );
    let random = CardRequest::Random { len: 8 };
    std::fs::write(&faults, "drop\n").unwrap();
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let result = card.call_with_timeout(&random, deadline);
    assert!(
        matches!(result, Err(CardError::Timeout { after }) if after == deadline),
        "{result:?}"
    );
    assert!(started.elapsed() >= deadline && started.elapsed() < Duration::from_secs(3));

    std::fs::write(&faults, "corrupt\n").unwrap();
    let result = card.call(&random);
    assert!(
        matches!(result, Err(CardError::MalformedResponse { .. })),
        "{result:?}"
    );

    std::fs::write(&faults, "").unwrap();
    assert!(matches!(card.call(&random), Ok(CardResponse::Bytes(b)) if b.len() == 8));

    std::fs::write(&faults, "tamper\n").unwrap();
    let result = card.call(&random);
    assert!(
        matches!(result, Err(CardError::Fault(CardFault::SelfTestFailed))),
        "{result:?}"
    );
    match card.call(&CardRequest::Info) {
        Ok(CardResponse::Info(info)) => assert!(!info.operational, "tampered card operational"),
        other => panic!("Info after tamper: {other:?}"),
    }
}

#[test]
fn restarted_emulator_can_be_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (mut emu, card) = start(dir.path());
    let p = policy(61, KeySpec::Ec(Curve::P256));
    let (blob, public) = generate(&card, &p);
    emu.kill();
    assert!(matches!(
        card.call(&CardRequest::Info),
        Err(CardError::Gone | CardError::Timeout { .. })
    ));
    assert!(
        card.reopen().is_err(),
        "reopened a card whose process is gone"
    );
    // A new emulator process on the same state directory and socket.
    let (_emu, first) = start(dir.path());
    drop(first);
    let card = card.reopen().expect("reattach to the restarted card");
    let prehash = Sha256::digest(b"after a restart").to_vec();
    let sig = sign(&card, &blob, &p, SignScheme::Ecdsa, &prehash).expect("sign");
    assert!(verify_p256(&public, &prehash, &sig));
}
