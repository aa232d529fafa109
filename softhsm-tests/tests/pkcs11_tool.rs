//! Runs scripts/pkcs11-tool-e2e.sh (OpenSC pkcs11-tool plus OpenSSL) against
//! the debug build, and against SoftHSM to show the script itself works.

use std::process::Command;

use softhsm_tests::binaries;

fn run_script(module_override: Option<&str>) {
    let env: Vec<(&str, &str)> = module_override
        .map(|module| ("MESIGN_E2E_MODULE", module))
        .into_iter()
        .collect();
    binaries::run_e2e_script("pkcs11-tool-e2e.sh", &env, &["MESIGN_E2E_MODULE"]);
}

mod mesign {
    #[test]
    fn pkcs11_tool_e2e() {
        super::run_script(None);
    }
}

mod softhsm {
    #[test]
    fn pkcs11_tool_e2e() {
        super::run_script(Some(softhsm_tests::binaries::SOFTHSM_MODULE));
    }
}

/// `pkcs11-tool -M` against our module lists every mechanism of the
/// decryption / key agreement / secret key / wrapping work with the
/// flags and key sizes C_GetMechanismInfo gives (bits for RSA and EC,
/// bytes for AES and HMAC keys, bits for generic secret generation, as
/// PKCS#11 counts each). OpenSC has no names for CKM_AES_KEY_WRAP_PAD
/// (0x210A) and CKM_AES_KEY_WRAP_KWP (0x210B).
#[test]
fn mesign_pkcs11_tool_lists_every_mechanism_with_its_flags() {
    let target = softhsm_tests::Target::ready(softhsm_tests::Kind::Mesign);
    let module = binaries::require(binaries::MESIGN_MODULE);
    let socket = std::env::var("MESIGN_HSM_SOCKET").expect("the harness names our socket");
    let out = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(&module)
        .arg("--slot")
        .arg(target.slot().id().to_string())
        .arg("-M")
        .env("MESIGN_HSM_SOCKET", socket)
        .output()
        .expect("run pkcs11-tool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pkcs11-tool -M failed:\n{stdout}");
    let listed: Vec<&str> = stdout.lines().map(str::trim).collect();
    let ec = "EC F_P, EC OID, EC uncompressed";
    let expected = [
        "RSA-PKCS, keySize={2048,4096}, hw, encrypt, decrypt, sign, verify".to_string(),
        "RSA-PKCS-OAEP, keySize={2048,4096}, hw, encrypt, decrypt, wrap, unwrap".into(),
        format!("ECDSA-KEY-PAIR-GEN, keySize={{256,521}}, hw, generate_key_pair, {ec}"),
        format!("ECDH1-DERIVE, keySize={{256,521}}, hw, derive, {ec}"),
        "EC-EDWARDS-KEY-PAIR-GEN, keySize={256,256}, hw, generate_key_pair".into(),
        "EDDSA, keySize={256,256}, hw, sign, verify".into(),
        "AES-KEY-GEN, keySize={16,32}, hw, generate".into(),
        "GENERIC-SECRET-KEY-GEN, keySize={8,512}, hw, generate".into(),
        "AES-GCM, keySize={16,32}, hw, encrypt, decrypt".into(),
        "AES-CBC-PAD, keySize={16,32}, hw, encrypt, decrypt".into(),
        "AES-CTR, keySize={16,32}, hw, encrypt, decrypt".into(),
        "AES-CMAC, keySize={16,32}, hw, sign, verify".into(),
        "SHA256-HMAC, keySize={1,64}, hw, sign, verify".into(),
        "SHA384-HMAC, keySize={1,64}, hw, sign, verify".into(),
        "SHA512-HMAC, keySize={1,64}, hw, sign, verify".into(),
        "AES-KEY-WRAP, keySize={16,32}, hw, wrap, unwrap".into(),
        "mechtype-0x210A, keySize={16,32}, hw, wrap, unwrap".into(),
        "SHA-1, digest".into(),
        "SHA224, digest".into(),
        "SHA256, digest".into(),
        "SHA384, digest".into(),
        "SHA512, digest".into(),
    ];
    for line in &expected {
        assert!(
            listed.contains(&line.as_str()),
            "pkcs11-tool -M lacks `{line}`:\n{stdout}"
        );
    }
}
