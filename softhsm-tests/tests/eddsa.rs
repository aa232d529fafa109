//! Ed25519 (CKM_EC_EDWARDS_KEY_PAIR_GEN, CKM_EDDSA, PKCS#11 3.0) against our
//! module and SoftHSMv2.
//!
//! Every signature the token makes is verified by RustCrypto's
//! `ed25519-dalek` (strict verification) with the point read from
//! CKA_EC_POINT, and every signature the token verifies was either made by
//! `ed25519-dalek` or checked by it.

use cryptoki::error::RvError;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use softhsm_tests::keys::{self, bytes, KeySpec};
use softhsm_tests::verify::Curve;
use softhsm_tests::{conformance, expect_rv, Divergence, Kind, Target};

/// CKA_EC_PARAMS as pkcs11-tool sends it: the PrintableString
/// "edwards25519".
const NAME: &[u8] = b"\x13\x0cedwards25519";
/// CKA_EC_PARAMS as the OID 1.3.101.112 (id-Ed25519).
const OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

fn pure() -> Mechanism<'static> {
    Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure))
}

/// A session Ed25519 pair generated on the token with `params`.
fn pair(s: &Session, params: &[u8]) -> (ObjectHandle, ObjectHandle) {
    let public = [
        Attribute::Token(false),
        Attribute::Verify(true),
        Attribute::EcParams(params.to_vec()),
    ];
    let private = [
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Sign(true),
    ];
    s.generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
        .expect("C_GenerateKeyPair Ed25519")
}

/// The independent verifier for the token's public key: CKA_EC_POINT must
/// be a DER OCTET STRING around the 32-byte point.
fn verifying_key(s: &Session, public: ObjectHandle) -> VerifyingKey {
    let der = bytes(s, public, AttributeType::EcPoint).expect("CKA_EC_POINT");
    assert_eq!(der.len(), 34, "CKA_EC_POINT {der:02x?}");
    assert_eq!(&der[..2], &[0x04, 0x20], "not a DER OCTET STRING");
    VerifyingKey::from_bytes(der[2..].try_into().unwrap()).expect("a valid Ed25519 point")
}

fn independently_valid(key: &VerifyingKey, message: &[u8], signature: &[u8]) {
    let signature = Signature::from_slice(signature).expect("64 bytes");
    key.verify_strict(message, &signature)
        .expect("ed25519-dalek rejects the token's signature");
}

fn mechanisms_are_listed_with_flags(t: &Target) {
    let info = |m| t.pkcs11().get_mechanism_info(t.slot(), m).unwrap();
    let gen = info(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN);
    assert!(gen.generate_key_pair(), "{gen:?}");
    let eddsa = info(MechanismType::EDDSA);
    assert!(eddsa.sign() && eddsa.verify(), "{eddsa:?}");
    for i in [gen, eddsa] {
        assert!(i.min_key_size() <= 256 && i.max_key_size() >= 256, "{i:?}");
    }
    let list = t.pkcs11().get_mechanism_list(t.slot()).unwrap();
    assert!(list.contains(&MechanismType::EDDSA));
    assert!(list.contains(&MechanismType::ECC_EDWARDS_KEY_PAIR_GEN));
}

fn generated_keys_sign_and_verify(t: &Target) {
    let s = t.user_session();
    for params in [NAME, OID] {
        let (public, private) = pair(&s, params);
        for key in [public, private] {
            // Ours names the curve as pkcs11-tool does, whatever the
            // template said; SoftHSMv2 keeps the OID on one half.
            let stored = bytes(&s, key, AttributeType::EcParams).unwrap();
            match t.kind() {
                Kind::Mesign => assert_eq!(stored, NAME),
                Kind::SoftHsm => assert!(stored == NAME || stored == params),
            }
            let attrs = s.get_attributes(key, &[AttributeType::KeyType]).unwrap();
            assert_eq!(attrs, [Attribute::KeyType(KeyType::EC_EDWARDS)]);
        }
        let independent = verifying_key(&s, public);
        let long = vec![0x5a; 10_000];
        for message in [&b""[..], b"contract of 2025-01-01", &long] {
            let signature = s.sign(&pure(), private, message).unwrap();
            assert_eq!(signature.len(), 64);
            independently_valid(&independent, message, &signature);
            // Ed25519 is deterministic (RFC 8032 §5.1.6).
            assert_eq!(s.sign(&pure(), private, message).unwrap(), signature);
            s.verify(&pure(), public, message, &signature).unwrap();
            let mut tampered = message.to_vec();
            tampered.push(0);
            expect_rv(
                s.verify(&pure(), public, &tampered, &signature),
                RvError::SignatureInvalid,
            );
            expect_rv(
                s.verify(&pure(), public, message, &signature[..63]),
                RvError::SignatureLenRange,
            );
        }
    }
}

/// A public key made by `ed25519-dalek` and imported verifies its
/// signatures, and refuses another key's.
fn imported_public_keys_verify_independent_signatures(t: &Target) {
    let s = t.user_session();
    let signer = SigningKey::from_bytes(&[0x42; 32]);
    let mut point = vec![0x04, 0x20];
    point.extend_from_slice(signer.verifying_key().as_bytes());
    let public = s
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Token(false),
            Attribute::Verify(true),
            Attribute::EcParams(NAME.to_vec()),
            Attribute::EcPoint(point),
        ])
        .expect("C_CreateObject Ed25519 public key");
    let message = b"signed elsewhere";
    let signature = signer.sign(message).to_bytes();
    s.verify(&pure(), public, message, &signature).unwrap();
    let other = SigningKey::from_bytes(&[0x43; 32]).sign(message).to_bytes();
    expect_rv(
        s.verify(&pure(), public, message, &other),
        RvError::SignatureInvalid,
    );
}

/// Key types, parameters and multi-part calls CKM_EDDSA does not take.
fn wrong_keys_and_parameters_are_refused(t: &Target) {
    let s = t.user_session();
    let (public, private) = pair(&s, NAME);
    let ec = keys::generate(
        &s,
        KeySpec::Ec(Curve::P256),
        &format!("eddsa-wrong-key-{}", t.kind().name()),
    );
    if t.diverges(Divergence::SoftHsmEddsaInitChecksNothing) {
        for (m, key) in [(pure(), ec.private), (Mechanism::Ecdsa, private)] {
            let s = t.user_session();
            s.sign_init(&m, key).unwrap();
        }
    } else {
        expect_rv(
            s.sign_init(&pure(), ec.private),
            RvError::KeyTypeInconsistent,
        );
        expect_rv(
            s.verify_init(&pure(), ec.public),
            RvError::KeyTypeInconsistent,
        );
        expect_rv(
            s.sign_init(&Mechanism::Ecdsa, private),
            RvError::KeyTypeInconsistent,
        );
        // Prehash and contexts are not offered.
        for scheme in [
            EddsaSignatureScheme::Ed25519ph(&[]),
            EddsaSignatureScheme::Ed25519ctx(b"context"),
        ] {
            let m = Mechanism::Eddsa(EddsaParams::new(scheme));
            expect_rv(s.sign_init(&m, private), RvError::MechanismParamInvalid);
            expect_rv(s.verify_init(&m, public), RvError::MechanismParamInvalid);
        }
    }
    // Pure EdDSA is single-part; the failed update ends the operation.
    let s = t.user_session();
    let update_rv = if t.diverges(Divergence::SoftHsmEddsaUpdateNotInitialized) {
        RvError::OperationNotInitialized
    } else {
        RvError::FunctionNotSupported
    };
    s.sign_init(&pure(), private).unwrap();
    expect_rv(s.sign_update(b"part"), update_rv);
    let signature = s.sign(&pure(), private, b"x").expect("a new operation");
    s.verify_init(&pure(), public).unwrap();
    expect_rv(s.verify_update(b"part"), update_rv);
    s.verify(&pure(), public, b"x", &signature).unwrap();
    // A curve name that is not Ed25519's.
    let public_template = [
        Attribute::Token(false),
        Attribute::EcParams(b"\x13\x0aedwards999".to_vec()),
    ];
    let private_template = [Attribute::Token(false), Attribute::Sign(true)];
    let result = s.generate_key_pair(
        &Mechanism::EccEdwardsKeyPairGen,
        &public_template,
        &private_template,
    );
    match t.kind() {
        // SoftHSMv2 answers CKR_GENERAL_ERROR.
        Kind::SoftHsm => assert!(result.is_err(), "an unknown curve generated a key"),
        Kind::Mesign => expect_rv(result, RvError::CurveNotSupported),
    }
}

conformance!(ready =>
    mechanisms_are_listed_with_flags,
    generated_keys_sign_and_verify,
    imported_public_keys_verify_independent_signatures,
    wrong_keys_and_parameters_are_refused,
);
