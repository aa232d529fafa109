//! Foundation cases on an initialized, logged-in token: information
//! functions, key generation, every foundation signature mechanism (verified
//! independently), attribute protection, object management, digest, random,
//! and the length and operation-state conventions.
//!
//! Ours shares one token across these cases, so every case uses its own labels.

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeInfo, AttributeType, CertificateType, KeyType, ObjectClass,
};
use cryptoki_sys::{
    CKA_MODULUS, CKA_PRIVATE_EXPONENT, CKA_VALUE, CKR_ATTRIBUTE_SENSITIVE, CKR_BUFFER_TOO_SMALL,
    CKR_OBJECT_HANDLE_INVALID, CKR_OK, CKR_OPERATION_NOT_INITIALIZED,
};
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::target::Kind;
use softhsm_tests::verify::{assert_genuine, sha256, sha256_digest_info, Curve};
use softhsm_tests::{binaries, conformance, expect_rv, Divergence, Target};

conformance!(ready =>
    library_info,
    slot_and_token_info,
    token_versions_and_serial_come_from_the_card,
    mechanism_list_has_the_foundation,
    rsa_key_pair_attributes,
    ec_key_pair_attributes,
    sha256_rsa_pkcs_signature_verifies,
    rsa_pkcs_over_digest_info_verifies,
    sha256_rsa_pkcs_pss_signature_verifies,
    rsa_pkcs_pss_over_digest_verifies,
    ecdsa_over_raw_hash_verifies,
    ecdsa_sha256_single_and_multi_part,
    token_verify_accepts_and_rejects,
    private_key_values_are_sensitive,
    find_objects_by_label_id_and_class,
    data_object_create_find_destroy,
    certificate_object_create_find_destroy,
    digest_sha256_matches,
    random_has_length_and_varies,
    sign_two_call_length_convention,
    second_sign_init_is_operation_active,
);

const MESSAGE: &[u8] = b"MeSign conformance: a document to sign";

fn pss_sha256(salt: u64) -> PkcsPssParams {
    PkcsPssParams {
        hash_alg: MechanismType::SHA256,
        mgf: PkcsMgfType::MGF1_SHA256,
        s_len: salt.into(),
    }
}

fn library_info(t: &Target) {
    let info = t.pkcs11().get_library_info().expect("C_GetInfo");
    let v = info.cryptoki_version();
    let version = (v.major(), v.minor());
    assert!(
        [(2, 40), (3, 0), (3, 1), (3, 2)].contains(&version),
        "cryptokiVersion {version:?}"
    );
    assert!(!info.manufacturer_id().is_empty(), "empty manufacturerID");
    assert!(
        !info.library_description().is_empty(),
        "empty libraryDescription"
    );
}

fn slot_and_token_info(t: &Target) {
    let slot = t.pkcs11().get_slot_info(t.slot()).expect("C_GetSlotInfo");
    assert!(slot.token_present(), "CKF_TOKEN_PRESENT");
    let token = t.pkcs11().get_token_info(t.slot()).expect("C_GetTokenInfo");
    assert!(token.token_initialized(), "CKF_TOKEN_INITIALIZED");
    assert!(token.user_pin_initialized(), "CKF_USER_PIN_INITIALIZED");
    assert!(token.login_required(), "CKF_LOGIN_REQUIRED");
    assert!(token.rng(), "CKF_RNG");
    assert_eq!(token.label(), t.token_label());

    // Fixed-width strings are blank padded, never NUL terminated.
    let (rv, raw) = t.raw().token_info(t.slot().id());
    assert_eq!(rv, CKR_OK, "raw C_GetTokenInfo");
    let want = format!("{:<32}", t.token_label());
    assert_eq!(raw.label.as_slice(), want.as_bytes(), "label padding");
    for (name, field) in [
        ("manufacturerID", &raw.manufacturerID[..]),
        ("model", &raw.model[..]),
        ("serialNumber", &raw.serialNumber[..]),
    ] {
        assert!(!field.contains(&0), "{name} contains NUL: {field:?}");
    }
}

/// The serial number is stable, and (ours) the token reports the firmware
/// version its card reports to the administrator (`mesign-hsm status`).
fn token_versions_and_serial_come_from_the_card(t: &Target) {
    let first = t.pkcs11().get_token_info(t.slot()).expect("C_GetTokenInfo");
    let again = t.pkcs11().get_token_info(t.slot()).expect("C_GetTokenInfo");
    assert_eq!(first.serial_number(), again.serial_number());
    assert!(!first.serial_number().trim().is_empty(), "empty serial");
    if t.kind() != Kind::Mesign {
        return;
    }
    let out = std::process::Command::new(binaries::require("mesign-hsm"))
        .args(["status", "--json"])
        .output()
        .expect("run mesign-hsm status");
    assert!(out.status.success(), "mesign-hsm status: {out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let card = status["cards"]
        .as_array()
        .and_then(|cards| cards.iter().find(|c| c["slot"] == t.slot().id()))
        .unwrap_or_else(|| panic!("no card for slot {} in {status}", t.slot().id()));
    let version = first.firmware_version();
    assert_eq!(
        card["firmware_version"],
        format!("{}.{}", version.major(), version.minor()),
        "token firmware version against the card's"
    );
    assert_ne!(
        (version.major(), version.minor()),
        (0, 0),
        "firmware version unset"
    );
}

fn mechanism_list_has_the_foundation(t: &Target) {
    let list = t
        .pkcs11()
        .get_mechanism_list(t.slot())
        .expect("C_GetMechanismList");
    for m in [
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        MechanismType::ECC_KEY_PAIR_GEN,
        MechanismType::RSA_PKCS,
        MechanismType::SHA256_RSA_PKCS,
        MechanismType::RSA_PKCS_PSS,
        MechanismType::SHA256_RSA_PKCS_PSS,
        MechanismType::ECDSA,
        MechanismType::SHA256,
    ] {
        assert!(list.contains(&m), "mechanism list lacks {m}");
    }
    let has_ecdsa_sha256 = list.contains(&MechanismType::ECDSA_SHA256);
    if t.diverges(Divergence::SoftHsmLacksEcdsaSha256) {
        assert!(
            !has_ecdsa_sha256,
            "SoftHSM gained CKM_ECDSA_SHA256: drop the divergence"
        );
    } else {
        assert!(has_ecdsa_sha256, "mechanism list lacks CKM_ECDSA_SHA256");
    }
    let info = t
        .pkcs11()
        .get_mechanism_info(t.slot(), MechanismType::ECDSA)
        .expect("C_GetMechanismInfo(ECDSA)");
    assert!(info.sign() && info.verify(), "CKM_ECDSA flags {info:?}");
    assert!(
        info.min_key_size() <= 256 && info.max_key_size() >= 384,
        "{info:?}"
    );
    let info = t
        .pkcs11()
        .get_mechanism_info(t.slot(), MechanismType::RSA_PKCS_KEY_PAIR_GEN)
        .expect("C_GetMechanismInfo(RSA_PKCS_KEY_PAIR_GEN)");
    assert!(info.generate_key_pair(), "{info:?}");
}

fn assert_private_key_attributes(t: &Target, pair: keys::KeyPair, label: &str, kt: KeyType) {
    let s = t.user_session();
    let k = pair.private;
    assert_eq!(keys::class(&s, k), ObjectClass::PRIVATE_KEY);
    assert_eq!(keys::key_type(&s, k), kt);
    assert_eq!(
        keys::flag(&s, k, AttributeType::Token),
        Some(true),
        "CKA_TOKEN"
    );
    assert_eq!(
        keys::flag(&s, k, AttributeType::Private),
        Some(true),
        "CKA_PRIVATE"
    );
    assert_eq!(
        keys::flag(&s, k, AttributeType::Sensitive),
        Some(true),
        "CKA_SENSITIVE"
    );
    assert_eq!(
        keys::flag(&s, k, AttributeType::Extractable),
        Some(false),
        "CKA_EXTRACTABLE"
    );
    assert_eq!(
        keys::flag(&s, k, AttributeType::Sign),
        Some(true),
        "CKA_SIGN"
    );
    assert_eq!(
        keys::flag(&s, k, AttributeType::Local),
        Some(true),
        "CKA_LOCAL"
    );
    assert_eq!(
        keys::flag(&s, k, AttributeType::AlwaysSensitive),
        Some(true),
        "CKA_ALWAYS_SENSITIVE"
    );
    assert_eq!(
        keys::flag(&s, k, AttributeType::NeverExtractable),
        Some(true),
        "CKA_NEVER_EXTRACTABLE"
    );
    assert_eq!(
        keys::bytes(&s, k, AttributeType::Label).as_deref(),
        Some(label.as_bytes())
    );
    assert_eq!(
        keys::bytes(&s, k, AttributeType::Id).as_deref(),
        Some(label.as_bytes())
    );
    let p = pair.public;
    assert_eq!(keys::class(&s, p), ObjectClass::PUBLIC_KEY);
    assert_eq!(keys::key_type(&s, p), kt);
    assert_eq!(
        keys::flag(&s, p, AttributeType::Token),
        Some(true),
        "public CKA_TOKEN"
    );
    assert_eq!(
        keys::bytes(&s, p, AttributeType::Id).as_deref(),
        Some(label.as_bytes())
    );
}

fn rsa_key_pair_attributes(t: &Target) {
    let s = t.user_session();
    let label = "basic-rsa-attrs";
    let pair = keys::generate(&s, KeySpec::Rsa(2048), label);
    assert_private_key_attributes(t, pair, label, KeyType::RSA);
    match keys::public_key(&s, KeySpec::Rsa(2048), pair.public) {
        softhsm_tests::verify::PublicKey::Rsa { n, e } => {
            assert_eq!(n.len(), 256, "2048-bit modulus");
            assert!(n[0] & 0x80 != 0, "modulus has its top bit set");
            assert_eq!(e, vec![1, 0, 1]);
        }
        other => panic!("{other:?}"),
    }
    // The private half carries the modulus too (PKCS#11 lists it as public).
    assert_eq!(
        keys::bytes(&s, pair.private, AttributeType::Modulus).map(|m| m.len()),
        Some(256)
    );
}

fn ec_key_pair_attributes(t: &Target) {
    let s = t.user_session();
    for (curve, label, point_len) in [
        (Curve::P256, "basic-ec-attrs-p256", 65),
        (Curve::P384, "basic-ec-attrs-p384", 97),
    ] {
        let pair = keys::generate(&s, KeySpec::Ec(curve), label);
        assert_private_key_attributes(t, pair, label, KeyType::EC);
        assert_eq!(
            keys::bytes(&s, pair.public, AttributeType::EcParams),
            Some(curve.params_der()),
            "public CKA_EC_PARAMS"
        );
        match keys::public_key(&s, KeySpec::Ec(curve), pair.public) {
            softhsm_tests::verify::PublicKey::Ec { point, .. } => {
                assert_eq!(point.len(), point_len, "{curve:?} point")
            }
            other => panic!("{other:?}"),
        }
    }
}

fn sha256_rsa_pkcs_signature_verifies(t: &Target) {
    let s = t.user_session();
    let spec = KeySpec::Rsa(2048);
    let pair = keys::generate(&s, spec, "basic-sha256-rsa-pkcs");
    let public = keys::public_key(&s, spec, pair.public);
    let sig = s
        .sign(&Mechanism::Sha256RsaPkcs, pair.private, MESSAGE)
        .expect("C_Sign SHA256_RSA_PKCS");
    assert_eq!(sig.len(), 256);
    assert_genuine("CKM_SHA256_RSA_PKCS", MESSAGE, |m| {
        public.verify_rsa_pkcs1_sha256(m, &sig)
    });
}

fn rsa_pkcs_over_digest_info_verifies(t: &Target) {
    let s = t.user_session();
    let spec = KeySpec::Rsa(2048);
    let pair = keys::generate(&s, spec, "basic-rsa-pkcs");
    let public = keys::public_key(&s, spec, pair.public);
    let sig = s
        .sign(
            &Mechanism::RsaPkcs,
            pair.private,
            &sha256_digest_info(MESSAGE),
        )
        .expect("C_Sign RSA_PKCS");
    assert_genuine("CKM_RSA_PKCS over DigestInfo", MESSAGE, |m| {
        public.verify_rsa_pkcs1_sha256(m, &sig)
    });
}

fn sha256_rsa_pkcs_pss_signature_verifies(t: &Target) {
    let s = t.user_session();
    let spec = KeySpec::Rsa(2048);
    let pair = keys::generate(&s, spec, "basic-sha256-rsa-pss");
    let public = keys::public_key(&s, spec, pair.public);
    let sig = s
        .sign(
            &Mechanism::Sha256RsaPkcsPss(pss_sha256(32)),
            pair.private,
            MESSAGE,
        )
        .expect("C_Sign SHA256_RSA_PKCS_PSS");
    assert_genuine("CKM_SHA256_RSA_PKCS_PSS", MESSAGE, |m| {
        public.verify_rsa_pss_sha256(m, &sig, 32)
    });
    // PSS is randomised: two signatures of one message differ.
    let again = s
        .sign(
            &Mechanism::Sha256RsaPkcsPss(pss_sha256(32)),
            pair.private,
            MESSAGE,
        )
        .expect("second C_Sign SHA256_RSA_PKCS_PSS");
    assert_ne!(sig, again, "PSS salt is not random");
}

fn rsa_pkcs_pss_over_digest_verifies(t: &Target) {
    let s = t.user_session();
    let spec = KeySpec::Rsa(2048);
    let pair = keys::generate(&s, spec, "basic-rsa-pss");
    let public = keys::public_key(&s, spec, pair.public);
    let sig = s
        .sign(
            &Mechanism::RsaPkcsPss(pss_sha256(32)),
            pair.private,
            &sha256(MESSAGE),
        )
        .expect("C_Sign RSA_PKCS_PSS");
    assert_genuine("CKM_RSA_PKCS_PSS over a digest", MESSAGE, |m| {
        public.verify_rsa_pss_sha256(m, &sig, 32)
    });
}

fn ecdsa_over_raw_hash_verifies(t: &Target) {
    let s = t.user_session();
    for (curve, label) in [
        (Curve::P256, "basic-ecdsa-p256"),
        (Curve::P384, "basic-ecdsa-p384"),
    ] {
        let spec = KeySpec::Ec(curve);
        let pair = keys::generate(&s, spec, label);
        let public = keys::public_key(&s, spec, pair.public);
        let hash = sha256(MESSAGE);
        let sig = s
            .sign(&Mechanism::Ecdsa, pair.private, &hash)
            .expect("C_Sign ECDSA");
        assert_eq!(sig.len(), 2 * curve.field_len(), "raw r||s for {curve:?}");
        assert_genuine(&format!("CKM_ECDSA {curve:?}"), &hash, |h| {
            public.verify_ecdsa_prehash(h, &sig)
        });
    }
}

fn ecdsa_sha256_single_and_multi_part(t: &Target) {
    let s = t.user_session();
    let spec = KeySpec::Ec(Curve::P256);
    let pair = keys::generate(&s, spec, "basic-ecdsa-sha256");
    let public = keys::public_key(&s, spec, pair.public);
    if t.diverges(Divergence::SoftHsmLacksEcdsaSha256) {
        expect_rv(
            s.sign_init(&Mechanism::EcdsaSha256, pair.private),
            RvError::MechanismInvalid,
        );
        return;
    }
    let single = s
        .sign(&Mechanism::EcdsaSha256, pair.private, MESSAGE)
        .expect("C_Sign ECDSA_SHA256");
    assert_genuine("CKM_ECDSA_SHA256 single-part", MESSAGE, |m| {
        public.verify_ecdsa_sha256(m, &single)
    });
    s.sign_init(&Mechanism::EcdsaSha256, pair.private)
        .expect("C_SignInit ECDSA_SHA256");
    for chunk in MESSAGE.chunks(7) {
        s.sign_update(chunk).expect("C_SignUpdate");
    }
    let multi = s.sign_final().expect("C_SignFinal");
    assert_genuine("CKM_ECDSA_SHA256 multi-part", MESSAGE, |m| {
        public.verify_ecdsa_sha256(m, &multi)
    });
}

fn token_verify_accepts_and_rejects(t: &Target) {
    let s = t.user_session();
    let rsa = keys::generate(&s, KeySpec::Rsa(2048), "basic-verify-rsa");
    let ec = keys::generate(&s, KeySpec::Ec(Curve::P256), "basic-verify-ec");
    let hash = sha256(MESSAGE);
    for (mechanism, pair, data) in [
        (Mechanism::Sha256RsaPkcs, rsa, MESSAGE),
        (Mechanism::Sha256RsaPkcsPss(pss_sha256(32)), rsa, MESSAGE),
        (Mechanism::Ecdsa, ec, hash.as_slice()),
    ] {
        let sig = s.sign(&mechanism, pair.private, data).expect("C_Sign");
        s.verify(&mechanism, pair.public, data, &sig)
            .unwrap_or_else(|e| panic!("C_Verify {mechanism:?}: {e}"));
        let mut bad = sig.clone();
        bad[sig.len() / 2] ^= 0x10;
        expect_rv(
            s.verify(&mechanism, pair.public, data, &bad),
            RvError::SignatureInvalid,
        );
    }
}

fn private_key_values_are_sensitive(t: &Target) {
    let s = t.user_session();
    let rsa = keys::generate(&s, KeySpec::Rsa(2048), "basic-sensitive-rsa");
    let ec = keys::generate(&s, KeySpec::Ec(Curve::P256), "basic-sensitive-ec");
    let info = s
        .get_attribute_info(
            rsa.private,
            &[AttributeType::PrivateExponent, AttributeType::Value],
        )
        .expect("C_GetAttributeValue sizes");
    assert!(
        info.iter()
            .all(|i| matches!(i, AttributeInfo::Sensitive | AttributeInfo::TypeInvalid)),
        "RSA private values: {info:?}"
    );
    assert!(
        matches!(info[0], AttributeInfo::Sensitive),
        "CKA_PRIVATE_EXPONENT: {info:?}"
    );
    let info = s
        .get_attribute_info(ec.private, &[AttributeType::Value])
        .expect("C_GetAttributeValue sizes");
    assert!(
        matches!(info[0], AttributeInfo::Sensitive),
        "EC CKA_VALUE: {info:?}"
    );

    // With real buffers: the sensitive entry is marked unavailable, the call
    // says CKR_ATTRIBUTE_SENSITIVE, and the valid entry is still filled.
    let (rv, attrs) = t.raw().attributes(
        s.handle(),
        rsa.private.handle(),
        &[
            (CKA_PRIVATE_EXPONENT, Output::Bytes(512)),
            (CKA_MODULUS, Output::Bytes(512)),
        ],
    );
    assert_eq!(rv, CKR_ATTRIBUTE_SENSITIVE, "C_GetAttributeValue rv");
    assert!(attrs[0].unavailable(), "private exponent: {:?}", attrs[0]);
    assert_eq!(
        attrs[1].value.as_ref().map(Vec::len),
        Some(256),
        "modulus still filled"
    );
    let (rv, attrs) = t.raw().attributes(
        s.handle(),
        ec.private.handle(),
        &[(CKA_VALUE, Output::Bytes(128))],
    );
    assert_eq!(rv, CKR_ATTRIBUTE_SENSITIVE);
    assert!(attrs[0].unavailable());
}

fn find_objects_by_label_id_and_class(t: &Target) {
    let s = t.user_session();
    let label = "basic-find";
    keys::generate(&s, KeySpec::Ec(Curve::P256), label);
    keys::generate(&s, KeySpec::Ec(Curve::P256), "basic-find-other");
    let label_attr = || Attribute::Label(label.as_bytes().to_vec());
    let id_attr = || Attribute::Id(label.as_bytes().to_vec());
    assert_eq!(keys::find(&s, &[label_attr()]).len(), 2, "by label");
    assert_eq!(keys::find(&s, &[id_attr()]).len(), 2, "by id");
    let private = keys::find(&s, &[Attribute::Class(ObjectClass::PRIVATE_KEY), id_attr()]);
    assert_eq!(private.len(), 1, "private by class and id");
    assert_eq!(keys::class(&s, private[0]), ObjectClass::PRIVATE_KEY);
    let public = keys::find(
        &s,
        &[Attribute::Class(ObjectClass::PUBLIC_KEY), label_attr()],
    );
    assert_eq!(public.len(), 1, "public by class and label");
    assert_ne!(public[0], private[0]);
    assert!(
        keys::find(&s, &[Attribute::Label(b"basic-find-nothing".to_vec())]).is_empty(),
        "an unused label finds nothing"
    );
    let all_private = keys::find(&s, &[Attribute::Class(ObjectClass::PRIVATE_KEY)]);
    assert!(
        all_private.len() >= 2,
        "by class alone: {}",
        all_private.len()
    );
    assert!(all_private.contains(&private[0]));
}

fn data_object_create_find_destroy(t: &Target) {
    let s = t.user_session();
    let label = b"basic-data".to_vec();
    let value = b"opaque application data".to_vec();
    let handle = s
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Label(label.clone()),
            Attribute::Application(b"softhsm-tests".to_vec()),
            Attribute::Value(value.clone()),
        ])
        .expect("C_CreateObject data");
    let template = [Attribute::Class(ObjectClass::DATA), Attribute::Label(label)];
    assert_eq!(keys::find(&s, &template), vec![handle]);
    assert_eq!(keys::bytes(&s, handle, AttributeType::Value), Some(value));
    assert_eq!(
        keys::bytes(&s, handle, AttributeType::Application).as_deref(),
        Some(&b"softhsm-tests"[..])
    );
    // C_GetObjectSize: at least the value it holds; nothing once destroyed.
    let (rv, size) = t.raw().object_size(s.handle(), handle.handle());
    assert_eq!(rv, CKR_OK, "C_GetObjectSize");
    assert!(
        size as usize >= b"opaque application data".len(),
        "object size {size} below its value's length"
    );
    s.destroy_object(handle).expect("C_DestroyObject");
    assert!(
        keys::find(&s, &template).is_empty(),
        "destroyed object still found"
    );
    let (rv, _) = t.raw().object_size(s.handle(), handle.handle());
    assert_eq!(
        rv, CKR_OBJECT_HANDLE_INVALID,
        "C_GetObjectSize after destroy"
    );
}

fn certificate_object_create_find_destroy(t: &Target) {
    let s = t.user_session();
    let der = softhsm_tests::TEST_CERTIFICATE.to_vec();
    let subject = softhsm_tests::der::certificate_subject(&der).expect("certificate subject");
    let id = b"basic-cert".to_vec();
    let handle = s
        .create_object(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Label(id.clone()),
            Attribute::Id(id.clone()),
            Attribute::Subject(subject.clone()),
            Attribute::Value(der.clone()),
        ])
        .expect("C_CreateObject certificate");
    let template = [
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::Id(id),
    ];
    assert_eq!(keys::find(&s, &template), vec![handle]);
    assert_eq!(keys::bytes(&s, handle, AttributeType::Value), Some(der));
    assert_eq!(
        keys::bytes(&s, handle, AttributeType::Subject),
        Some(subject)
    );
    s.destroy_object(handle).expect("C_DestroyObject");
    assert!(
        keys::find(&s, &template).is_empty(),
        "destroyed certificate still found"
    );
}

fn digest_sha256_matches(t: &Target) {
    let s = t.session();
    let single = s.digest(&Mechanism::Sha256, MESSAGE).expect("C_Digest");
    assert_eq!(single, sha256(MESSAGE));
    s.digest_init(&Mechanism::Sha256).expect("C_DigestInit");
    for chunk in MESSAGE.chunks(5) {
        s.digest_update(chunk).expect("C_DigestUpdate");
    }
    assert_eq!(s.digest_final().expect("C_DigestFinal"), sha256(MESSAGE));
    assert_eq!(
        s.digest(&Mechanism::Sha256, b"").expect("C_Digest empty"),
        sha256(b"")
    );
}

fn random_has_length_and_varies(t: &Target) {
    let s = t.session();
    let a = s.generate_random_vec(32).expect("C_GenerateRandom");
    let b = s.generate_random_vec(32).expect("C_GenerateRandom");
    assert_eq!((a.len(), b.len()), (32, 32));
    assert_ne!(a, b, "two random draws are equal");
    assert!(a.iter().any(|&x| x != a[0]), "constant random output {a:?}");
    let big = s.generate_random_vec(4096).expect("C_GenerateRandom 4096");
    let distinct = big.iter().collect::<std::collections::HashSet<_>>().len();
    assert!(
        distinct > 200,
        "only {distinct} distinct byte values in 4096 random bytes"
    );
}

fn sign_two_call_length_convention(t: &Target) {
    let s = t.user_session();
    let rsa_spec = KeySpec::Rsa(2048);
    let ec_spec = KeySpec::Ec(Curve::P256);
    let rsa = keys::generate(&s, rsa_spec, "basic-two-call-rsa");
    let ec = keys::generate(&s, ec_spec, "basic-two-call-ec");
    let hash = sha256(MESSAGE);
    for (mechanism, pair, spec, data, len) in [
        (Mechanism::Sha256RsaPkcs, rsa, rsa_spec, MESSAGE, 256usize),
        (Mechanism::Ecdsa, ec, ec_spec, hash.as_slice(), 64),
    ] {
        s.sign_init(&mechanism, pair.private).expect("C_SignInit");
        let query = t.raw().sign(s.handle(), data, Output::Null);
        assert_eq!(
            (query.rv, query.len as usize),
            (CKR_OK, len),
            "NULL buffer → length"
        );
        let small = t.raw().sign(s.handle(), data, Output::Bytes(len - 1));
        assert_eq!(
            (small.rv, small.len as usize),
            (CKR_BUFFER_TOO_SMALL, len),
            "short buffer → CKR_BUFFER_TOO_SMALL and the length"
        );
        let done = t.raw().sign(s.handle(), data, Output::Bytes(len + 16));
        assert_eq!(
            done.rv, CKR_OK,
            "the operation stayed active after BUFFER_TOO_SMALL"
        );
        assert_eq!(done.bytes.len(), len);
        let public = keys::public_key(&s, spec, pair.public);
        assert_genuine(&format!("two-call {mechanism:?}"), data, |d| match spec {
            KeySpec::Rsa(_) => public.verify_rsa_pkcs1_sha256(d, &done.bytes),
            KeySpec::Ec(_) => public.verify_ecdsa_prehash(d, &done.bytes),
        });
        let after = t.raw().sign(s.handle(), data, Output::Bytes(len));
        assert_eq!(
            after.rv, CKR_OPERATION_NOT_INITIALIZED,
            "a finished C_Sign ends the operation"
        );
    }
}

fn second_sign_init_is_operation_active(t: &Target) {
    let s = t.user_session();
    let ec = keys::generate(&s, KeySpec::Ec(Curve::P256), "basic-op-active");
    s.sign_init(&Mechanism::Ecdsa, ec.private)
        .expect("first C_SignInit");
    expect_rv(
        s.sign_init(&Mechanism::Ecdsa, ec.private),
        RvError::OperationActive,
    );
    // The first operation is intact.
    let hash = sha256(MESSAGE);
    let sig = s.sign(&Mechanism::Ecdsa, ec.private, &hash);
    // cryptoki's sign() calls C_SignInit again, so finish through the raw call.
    expect_rv(sig, RvError::OperationActive);
    let done = t.raw().sign(s.handle(), &hash, Output::Bytes(64));
    assert_eq!(
        done.rv, CKR_OK,
        "first operation survived the rejected C_SignInit"
    );
    let public = keys::public_key(&s, KeySpec::Ec(Curve::P256), ec.public);
    assert_genuine("signature after CKR_OPERATION_ACTIVE", &hash, |h| {
        public.verify_ecdsa_prehash(h, &done.bytes)
    });
}
