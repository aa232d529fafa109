//! Failover with a remote box over mutual TLS: the module is configured
//! (`pkcs11.conf`: `daemons = ["unix:A", "tls:127.0.0.1:PORT"]` with the
//! signing server's client certificate from `mesign-hsm domain tls-cert
//! --client`) with box A on its Unix socket and box B on its TLS listener.
//!
//! - A box whose certificate does not chain to the configured CA is never
//!   used: the module signs on A alone.
//! - With the domain CA, signatures are spread over A and B (each
//!   daemon's audit log counts its own).
//! - B killed mid-run: at most the call in flight fails, with
//!   CKR_DEVICE_ERROR, and signing goes on on A.
//!
//! Every signature is verified with the `p256` crate. Ours only.

mod failover_boxes;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use failover_boxes::{assert_signing_spreads, logged_in, sign_for, sign_verified, two_boxes, Box};
use softhsm_tests::binaries;
use softhsm_tests::standalone::only_slot;

/// Writes the module's config file naming A (Unix) and B (TLS), with `ca`
/// as the trust anchor for B.
fn module_config(path: &Path, a: &Box, b: &Box, client: &Path, ca: &Path) {
    let text = format!(
        "daemons = [\"unix:{}\", \"tls:127.0.0.1:{}\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n",
        a.socket().display(),
        b.port.unwrap(),
        client.join("signer.crt").display(),
        client.join("signer.key").display(),
        ca.display(),
    );
    std::fs::write(path, text).unwrap();
}

/// Loads and initialises the module, which reads its config file now.
fn initialised() -> Pkcs11 {
    let pkcs11 = Pkcs11::new(binaries::require(binaries::MESIGN_MODULE)).expect("load module");
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    pkcs11
}

#[test]
fn signing_spreads_over_a_tls_box_and_goes_on_when_it_dies() {
    let root = tempfile::Builder::new()
        .prefix("failover-tls-")
        .tempdir()
        .unwrap();
    let root = root.path();
    let (mut a, mut b) = two_boxes(root);
    b.listen_tls();
    let client = root.join("client");
    std::fs::create_dir_all(&client).unwrap();
    a.cli(&[
        "domain",
        "tls-cert",
        "--name",
        "signer",
        "--client",
        "--out-dir",
        client.to_str().unwrap(),
    ]);
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-keyout", "other-ca.key", "-out", "other-ca.pem"])
        .args(["-subj", "/CN=Not the domain CA"])
        .current_dir(root)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "{out:?}");
    let conf = root.join("pkcs11.conf");
    std::env::remove_var("MESIGN_HSM_SOCKET");
    std::env::remove_var("MESIGN_HSM_DAEMONS");
    std::env::set_var("MESIGN_HSM_CONF", &conf);

    // Another CA: B's certificate is refused, A signs everything.
    module_config(&conf, &a, &b, &client, &root.join("other-ca.pem"));
    let pkcs11 = initialised();
    let slot = only_slot(&pkcs11);
    let b_from = b.audit_len();
    {
        let (session, key, public) = logged_in(&pkcs11, slot);
        sign_for(
            &session,
            key,
            &public,
            40,
            Duration::from_millis(1200),
            "wrong CA",
        );
    }
    pkcs11.finalize().expect("C_Finalize");
    b.stop();
    assert_eq!(
        b.signatures_since(b_from),
        0,
        "B served without a valid certificate"
    );
    b.start();

    // The domain CA: spread over A and B.
    let domain_ca = b.dir.join("certs/domain-ca.crt");
    module_config(&conf, &a, &b, &client, &domain_ca);
    let pkcs11 = initialised();
    let slot = only_slot(&pkcs11);
    assert_signing_spreads(&pkcs11, slot, &mut a, &mut b, "tls spread");

    // B killed while signing: at most the call in flight fails.
    let (session, key, public) = logged_in(&pkcs11, slot);
    sign_for(
        &session,
        key,
        &public,
        20,
        Duration::from_millis(1200),
        "before the kill",
    );
    b.kill();
    let mut failed = Vec::new();
    for i in 0..40 {
        match sign_verified(
            &session,
            key,
            &public,
            format!("after the kill {i}").as_bytes(),
        ) {
            Ok(()) => {}
            Err(Error::Pkcs11(rv, _)) => failed.push(rv),
            Err(e) => panic!("{e}"),
        }
    }
    println!("tls: failed after killing B: {failed:?}");
    assert!(failed.len() <= 1, "{failed:?}");
    assert!(
        failed.iter().all(|&rv| rv == RvError::DeviceError),
        "{failed:?}"
    );
    drop(session);
    a.stop();
}
