//! The daemon's hash-chained audit log, read through the admin CLI: admin
//! and key-management events land in order (signing volume as one
//! `signatures` record per key, flushed at shutdown), `audit verify`
//! accepts the intact log with the right head hash, and names the bad
//! record after an edit, a removal and a swap of records on disk.
//!
//! Ours only (SoftHSM keeps no such log); its own file because it needs a
//! blank token and restarts the daemon.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cryptoki::error::{Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, CertificateType, KeyType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki_sys::{CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_PAD, CKR_BUFFER_TOO_SMALL, CKR_OK};
use sha2::Digest;
use softhsm_tests::ffi::Output as Buffer;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::target::{pin, Kind, USER_PIN};
use softhsm_tests::verify::{assert_genuine, sha256, Curve};
use softhsm_tests::{binaries, Target};

const NEW_PIN: &str = "654321";

fn cli(args: &[&str]) -> Output {
    Command::new(binaries::require("mesign-hsm"))
        .args(args)
        .output()
        .expect("run mesign-hsm")
}

fn cli_ok(args: &[&str], t: &Target) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "mesign-hsm {args:?} failed ({}):\n{}{}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        t.daemon_log()
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `audit verify` on a broken log: exit code 1 and the message.
fn verify_fails(t: &Target) -> String {
    let out = cli(&["audit", "verify"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "audit verify accepted a tampered log:\n{}{stderr}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        t.daemon_log()
    );
    stderr
}

fn audit_log(t: &Target) -> PathBuf {
    t.daemon_state_dir()
        .expect("our daemon's state dir")
        .join("slot-0")
        .join("audit.log")
}

fn write_lines(path: &Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write audit log");
}

#[test]
fn events_are_logged_in_order_and_tampering_is_detected() {
    const KEK: [u8; 32] = *b"audit test's key-encryption key!";
    const EXPORTED: [u8; 32] = *b"an AES key the audit log records";
    let t = Target::blank(Kind::Mesign);
    t.init_token("audit-test");
    t.init_user_pin();
    let public = {
        let s = t.session();
        assert!(matches!(
            s.login(UserType::User, Some(&pin("not-the-pin"))),
            Err(Error::Pkcs11(RvError::PinIncorrect, _))
        ));
        s.login(UserType::User, Some(&pin(USER_PIN)))
            .expect("C_Login");
        let spec = KeySpec::Ec(Curve::P256);
        let pair = keys::generate(&s, spec, "audit-key");
        let der = softhsm_tests::TEST_CERTIFICATE.to_vec();
        let subject = softhsm_tests::der::certificate_subject(&der).expect("subject");
        let cert = s
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Label(b"audit-cert".to_vec()),
                Attribute::Id(b"audit-cert".to_vec()),
                Attribute::Subject(subject),
                Attribute::Value(der),
            ])
            .expect("C_CreateObject certificate");
        s.destroy_object(cert).expect("C_DestroyObject");
        s.set_pin(&pin(USER_PIN), &pin(NEW_PIN)).expect("C_SetPIN");
        let public = keys::public_key(&s, spec, pair.public);
        for i in 0..3u8 {
            let hash = sha256(&[i]);
            let sig = s
                .sign(&Mechanism::Ecdsa, pair.private, &hash)
                .expect("C_Sign");
            assert_genuine("ECDSA", &hash, |h| public.verify_ecdsa_prehash(h, &sig));
        }
        // An extractable key leaves the card under a wrapping key; the
        // wrapped bytes unwrap, with RustCrypto, to the key's value.
        let secret = |label: &str, value: &[u8], wraps: bool| {
            s.create_object(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Value(value.to_vec()),
                Attribute::Wrap(wraps),
                Attribute::Extractable(!wraps),
                Attribute::Sensitive(true),
            ])
            .expect("C_CreateObject secret key")
        };
        let kek = secret("audit-kek", &KEK, true);
        let exported = secret("audit-exported", &EXPORTED, false);
        let wrapped = s
            .wrap_key(&Mechanism::AesKeyWrapPad, kek, exported)
            .expect("C_WrapKey");
        let mut unwrapped = [0u8; 32];
        aes_kw::KekAes256::from(KEK)
            .unwrap_with_padding(&wrapped, &mut unwrapped)
            .expect("RFC 5649 unwrap");
        assert_eq!(unwrapped, EXPORTED);
        // The usual two calls (length, then bytes) wrap once; so do a length
        // query, a short buffer and the bytes. A call for another mechanism
        // wraps anew.
        let raw = t.raw();
        let wrap = |mechanism, output| {
            raw.wrap_key(
                s.handle(),
                mechanism,
                kek.handle(),
                exported.handle(),
                output,
            )
        };
        let query = wrap(CKM_AES_KEY_WRAP_PAD, Buffer::Null);
        let short = wrap(CKM_AES_KEY_WRAP_PAD, Buffer::Bytes(query.len as usize - 1));
        let fetched = wrap(CKM_AES_KEY_WRAP_PAD, Buffer::Bytes(64));
        assert_eq!(
            (query.rv, short.rv, fetched.rv),
            (CKR_OK, CKR_BUFFER_TOO_SMALL, CKR_OK)
        );
        assert_eq!(fetched.bytes, wrapped, "RFC 5649 is deterministic");
        assert_eq!(wrap(CKM_AES_KEY_WRAP_PAD, Buffer::Null).rv, CKR_OK);
        let other = wrap(CKM_AES_KEY_WRAP, Buffer::Bytes(64));
        assert_eq!(other.rv, CKR_OK);
        assert_eq!(
            aes_kw::KekAes256::from(KEK)
                .unwrap_vec(&other.bytes)
                .unwrap(),
            EXPORTED,
            "the other mechanism's bytes, not the pending ones"
        );
        public
    };
    drop(public);
    // The signing volume is written at shutdown at the latest.
    t.restart();

    let shown: serde_json::Value =
        serde_json::from_str(&cli_ok(&["--json", "audit", "show"], &t)).expect("JSON");
    let records = shown.as_array().expect("an array of records");
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().expect("event kind"))
        .collect();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64, "record {i}: {r}");
    }
    // In this order (other records, such as further logins, may come between).
    let expected = [
        "token_init",
        "login",
        "pin_initialized",
        "login_failure",
        "login",
        "key_generated",
        "certificate_imported",
        "object_destroyed",
        "pin_changed",
        "key_wrapped",
        "signatures",
    ];
    let mut at = 0;
    for want in expected {
        let found = events[at..].iter().position(|e| *e == want);
        let found = found.unwrap_or_else(|| panic!("no {want} after record {at} in {events:?}"));
        at += found + 1;
    }
    let detail = |kind: &str| {
        records
            .iter()
            .filter(|r| r["event"] == kind)
            .map(|r| r["detail"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(detail("token_init")[0]["label"], "audit-test");
    assert_eq!(detail("login_failure").len(), 1);
    assert_eq!(detail("login_failure")[0]["user"], "user");
    assert_eq!(detail("key_generated")[0]["label"], "audit-key");
    assert_eq!(detail("certificate_imported")[0]["label"], "audit-cert");
    assert_eq!(detail("object_destroyed")[0]["label"], "audit-cert");
    assert_eq!(detail("pin_changed")[0]["user"], "user");
    // One record per wrap: the two calls of cryptoki, the length query
    // with its short buffer and fetch, then the query and the other
    // mechanism's call.
    let wrapped = &detail("key_wrapped")[..];
    assert_eq!(wrapped.len(), 4, "{wrapped:?}");
    assert_eq!(wrapped[0]["label"], "audit-exported");
    assert_eq!(wrapped[0]["wrapping_key"]["label"], "audit-kek");
    assert_eq!(
        wrapped[0]["mechanism"],
        "AES key wrap with padding (RFC 5649)"
    );
    let signed: u64 = detail("signatures")
        .iter()
        .filter(|d| d["label"] == "audit-key")
        .map(|d| d["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(signed, 3, "signature count");

    // The intact log verifies, with the head hash of its last line.
    let path = audit_log(&t);
    let original = std::fs::read_to_string(&path).expect("read audit log");
    let lines: Vec<&str> = original.lines().collect();
    assert_eq!(lines.len(), records.len());
    let head: String = sha2::Sha256::digest(lines.last().unwrap().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let ok = cli_ok(&["audit", "verify"], &t);
    assert_eq!(
        ok.trim(),
        format!("OK: {} records, head {head}", lines.len())
    );

    // Record 3 is changed, keeping it valid JSON: its time is one second on.
    let mut edited = lines.clone();
    let time_at = edited[3].find("\"time\":").expect("time field") + 7;
    let mut bytes = edited[3].as_bytes().to_vec();
    let digit = &mut bytes[time_at];
    *digit = if *digit == b'9' { b'8' } else { *digit + 1 };
    let edited_line = String::from_utf8(bytes).unwrap();
    edited[3] = &edited_line;
    let mut removed = lines.clone();
    removed.remove(3);
    let mut swapped = lines.clone();
    swapped.swap(3, 4);
    for (what, tampered, bad) in [
        (
            "edit",
            edited,
            "record 4: its prev hash is not the SHA-256 of record 3",
        ),
        ("removal", removed, "record 3: sequence number 4 where 3"),
        ("swap", swapped, "record 3: sequence number 4 where 3"),
    ] {
        write_lines(&path, &lines);
        write_lines(&path, &tampered);
        t.restart();
        let stderr = verify_fails(&t);
        assert!(
            stderr.contains(bad),
            "{what}: audit verify should say \"{bad}\", said: {stderr}"
        );
    }
    // And the original verifies again.
    write_lines(&path, &lines);
    t.restart();
    assert_eq!(cli_ok(&["audit", "verify"], &t).trim(), ok.trim());
}
