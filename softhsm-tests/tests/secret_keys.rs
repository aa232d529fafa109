//! Secret keys (AES, generic secret) against our module and SoftHSMv2:
//! generation, attributes, import by value, AES-GCM / CBC-PAD / CTR,
//! AES-CMAC and HMAC-SHA-2.
//!
//! Every output is checked against an independent implementation: keys are
//! imported by value so that RustCrypto (`aes-gcm`, `aes` + `cbc` / `ctr`,
//! `cmac`, `hmac` + `sha2`) can compute the same ciphertext or MAC; keys
//! generated on the token are checked through their CKA_CHECK_VALUE and by
//! round trips.

use aes::cipher::{BlockEncrypt, BlockEncryptMut, KeyIvInit, StreamCipher};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use cryptoki::error::RvError;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CKA_VALUE, CKR_ATTRIBUTE_SENSITIVE, CKR_BUFFER_TOO_SMALL, CKR_ENCRYPTED_DATA_INVALID,
    CKR_GENERAL_ERROR, CKR_OK, CK_SESSION_HANDLE,
};
use hmac::Mac;
use sha2::Digest;
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::{attribute, flag};
use softhsm_tests::{conformance, expect_rv, Divergence, Kind, Target};

const KEY: [u8; 16] = *b"0123456789abcdef";
const KEY256: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
const MESSAGE: &[u8] = b"a contract worth encrypting, 45 bytes long...";

fn handle(s: &Session) -> CK_SESSION_HANDLE {
    s.handle()
}

/// A session AES key created from `value` with every AES usage.
fn aes_key(s: &Session, value: &[u8]) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(value.to_vec()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(true),
        Attribute::Verify(true),
    ])
    .expect("C_CreateObject AES key")
}

fn generic_key(s: &Session, value: &[u8], sign: bool) -> ObjectHandle {
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Value(value.to_vec()),
        Attribute::Sign(sign),
        Attribute::Verify(true),
    ])
    .expect("C_CreateObject generic secret")
}

fn gcm<'a>(iv: &'a mut [u8], aad: &'a [u8], tag_bits: u64) -> Mechanism<'a> {
    Mechanism::AesGcm(GcmParams::new(iv, aad, tag_bits.into()).unwrap())
}

fn generate_and_read_attributes(t: &Target) {
    let s = t.user_session();
    let aes = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .expect("C_GenerateKey AES-256");
    for (ty, want) in [
        (AttributeType::Local, true),
        (AttributeType::AlwaysSensitive, true),
        (AttributeType::NeverExtractable, true),
        (AttributeType::Sensitive, true),
    ] {
        assert_eq!(flag(&s, aes, ty), Some(want), "{ty:?}");
    }
    assert!(matches!(
        attribute(&s, aes, AttributeType::ValueLen),
        Some(Attribute::ValueLen(len)) if u64::from(len) == 32
    ));
    assert_eq!(check_value(&s, aes).len(), 3);
    let (rv, attrs) =
        t.raw()
            .attributes(handle(&s), aes.handle(), &[(CKA_VALUE, Output::Bytes(64))]);
    assert_eq!(rv, CKR_ATTRIBUTE_SENSITIVE);
    assert!(attrs[0].unavailable());
    // A generated key round-trips (its value is unknown, so a round trip
    // and the check value are what can be checked).
    let mut iv = [3u8; 12];
    let sealed = s.encrypt(&gcm(&mut iv, b"", 128), aes, MESSAGE).unwrap();
    assert_eq!(sealed.len(), MESSAGE.len() + 16);
    let mut iv = [3u8; 12];
    assert_eq!(
        s.decrypt(&gcm(&mut iv, b"", 128), aes, &sealed).unwrap(),
        MESSAGE
    );

    let generic = s
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(48.into()),
                Attribute::Sign(true),
                Attribute::Verify(true),
            ],
        )
        .expect("C_GenerateKey generic secret");
    let mac = s.sign(&Mechanism::Sha384Hmac, generic, MESSAGE).unwrap();
    assert_eq!(mac.len(), 48);
    s.verify(&Mechanism::Sha384Hmac, generic, MESSAGE, &mac)
        .unwrap();
    if t.kind() == Kind::Mesign {
        // Our bounds: AES 16/24/32 bytes, generic secrets 1..=64 bytes.
        for (mechanism, len) in [
            (Mechanism::AesKeyGen, 20),
            (Mechanism::GenericSecretKeyGen, 65),
        ] {
            expect_rv(
                s.generate_key(&mechanism, &[Attribute::ValueLen(len.into())]),
                RvError::AttributeValueInvalid,
            );
        }
    }
}

fn check_values_and_import_flags(t: &Target) {
    let s = t.user_session();
    let aes = aes_key(&s, &KEY);
    let mut block = [0u8; 16];
    aes::Aes128::new(&KEY.into()).encrypt_block((&mut block).into());
    assert_eq!(check_value(&s, aes), block[..3]);
    for ty in [
        AttributeType::Local,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
    ] {
        assert_eq!(flag(&s, aes, ty), Some(false), "{ty:?}");
    }
    let generic = generic_key(&s, b"an HMAC key of 24 bytes.", true);
    let digest = sha1_of(b"an HMAC key of 24 bytes.");
    assert_eq!(check_value(&s, generic), digest[..3]);
}

fn check_value(s: &Session, key: ObjectHandle) -> Vec<u8> {
    match attribute(s, key, AttributeType::CheckValue) {
        Some(Attribute::CheckValue(v)) => v,
        other => panic!("CKA_CHECK_VALUE: {other:?}"),
    }
}

/// SHA-1 with the `sha1` crate the suite already uses for OAEP.
fn sha1_of(data: &[u8]) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(data).to_vec()
}

fn aes_gcm_matches_rustcrypto(t: &Target) {
    let s = t.user_session();
    let key = aes_key(&s, &KEY256);
    let aad = b"document header";
    let mut iv = [9u8; 12];
    let sealed = s.encrypt(&gcm(&mut iv, aad, 128), key, MESSAGE).unwrap();
    let independent = aes_gcm::Aes256Gcm::new(&KEY256.into())
        .encrypt(&[9u8; 12].into(), Payload { msg: MESSAGE, aad })
        .unwrap();
    assert_eq!(sealed, independent);
    let mut iv = [9u8; 12];
    assert_eq!(
        s.decrypt(&gcm(&mut iv, aad, 128), key, &sealed).unwrap(),
        MESSAGE
    );
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let bad_tag = if t.diverges(Divergence::SoftHsmSymmetricDecryptErrorsAreGeneral) {
        RvError::GeneralError
    } else {
        RvError::EncryptedDataInvalid
    };
    let mut iv = [9u8; 12];
    expect_rv(s.decrypt(&gcm(&mut iv, aad, 128), key, &tampered), bad_tag);
    let mut iv = [9u8; 12];
    expect_rv(
        s.decrypt(&gcm(&mut iv, b"other header", 128), key, &sealed),
        bad_tag,
    );
    if t.kind() == Kind::Mesign {
        // aws-lc-rs takes 96-bit IVs and full tags only.
        let mut long_iv = [9u8; 16];
        expect_rv(
            s.encrypt_init(&gcm(&mut long_iv, aad, 128), key),
            RvError::MechanismParamInvalid,
        );
        let mut iv = [9u8; 12];
        expect_rv(
            s.encrypt_init(&gcm(&mut iv, aad, 96), key),
            RvError::MechanismParamInvalid,
        );
    }
}

fn aes_cbc_pad_matches_rustcrypto_with_length_queries(t: &Target) {
    let s = t.user_session();
    let key = aes_key(&s, &KEY);
    let iv = [5u8; 16];
    let independent = cbc::Encryptor::<aes::Aes128>::new(&KEY.into(), &iv.into())
        .encrypt_padded_vec_mut::<aes::cipher::block_padding::Pkcs7>(MESSAGE);
    s.encrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
    let query = t.raw().encrypt(handle(&s), MESSAGE, Output::Null);
    assert_eq!((query.rv, query.len), (CKR_OK, 48));
    let short = t.raw().encrypt(handle(&s), MESSAGE, Output::Bytes(47));
    assert_eq!((short.rv, short.len), (CKR_BUFFER_TOO_SMALL, 48));
    let done = t.raw().encrypt(handle(&s), MESSAGE, Output::Bytes(48));
    assert_eq!(done.rv, CKR_OK);
    assert_eq!(done.bytes, independent);

    s.decrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
    let query = t.raw().decrypt(handle(&s), &independent, Output::Null);
    assert_eq!(query.rv, CKR_OK);
    assert!(query.len as usize >= MESSAGE.len());
    let done = t.raw().decrypt(handle(&s), &independent, Output::Bytes(48));
    assert_eq!((done.rv, done.bytes.as_slice()), (CKR_OK, MESSAGE));
    expect_rv(
        s.decrypt(&Mechanism::AesCbcPad(iv), key, &independent[..47]),
        RvError::EncryptedDataLenRange,
    );
    let mut bad_padding = independent.clone();
    bad_padding[47] ^= 0x55;
    s.decrypt_init(&Mechanism::AesCbcPad(iv), key).unwrap();
    let bad = t.raw().decrypt(handle(&s), &bad_padding, Output::Bytes(48));
    let want = if t.diverges(Divergence::SoftHsmSymmetricDecryptErrorsAreGeneral) {
        CKR_GENERAL_ERROR
    } else {
        CKR_ENCRYPTED_DATA_INVALID
    };
    assert_eq!(bad.rv, want);
}

fn aes_ctr_matches_rustcrypto(t: &Target) {
    let s = t.user_session();
    let key = aes_key(&s, &KEY);
    let counter = [0xf0u8; 16];
    let mut independent = MESSAGE.to_vec();
    ctr::Ctr128BE::<aes::Aes128>::new(&KEY.into(), &counter.into())
        .apply_keystream(&mut independent);
    assert_eq!(
        t.raw()
            .aes_ctr_init(handle(&s), key.handle(), 128, counter, true),
        CKR_OK
    );
    let done = t
        .raw()
        .encrypt(handle(&s), MESSAGE, Output::Bytes(MESSAGE.len()));
    assert_eq!((done.rv, &done.bytes), (CKR_OK, &independent));
    assert_eq!(
        t.raw()
            .aes_ctr_init(handle(&s), key.handle(), 128, counter, false),
        CKR_OK
    );
    let done = t
        .raw()
        .decrypt(handle(&s), &independent, Output::Bytes(MESSAGE.len()));
    assert_eq!((done.rv, done.bytes.as_slice()), (CKR_OK, MESSAGE));
}

fn cmac_and_hmac_match_rustcrypto(t: &Target) {
    let s = t.user_session();
    let aes = aes_key(&s, &KEY);
    let tag = s.sign(&Mechanism::AesCMac, aes, MESSAGE).unwrap();
    let mut independent = <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(&KEY).unwrap();
    independent.update(MESSAGE);
    assert_eq!(tag, independent.finalize().into_bytes().to_vec());
    s.verify(&Mechanism::AesCMac, aes, MESSAGE, &tag).unwrap();

    // 64 bytes: SoftHSMv2 wants HMAC keys at least as long as the hash.
    let value = b"HMAC key, 64 bytes of it, as long as the longest hash output....";
    let generic = generic_key(&s, value, true);
    let cases: [(Mechanism, Vec<u8>); 3] = [
        (Mechanism::Sha256Hmac, {
            let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(value).unwrap();
            m.update(MESSAGE);
            m.finalize().into_bytes().to_vec()
        }),
        (Mechanism::Sha384Hmac, {
            let mut m = <hmac::Hmac<sha2::Sha384> as Mac>::new_from_slice(value).unwrap();
            m.update(MESSAGE);
            m.finalize().into_bytes().to_vec()
        }),
        (Mechanism::Sha512Hmac, {
            let mut m = <hmac::Hmac<sha2::Sha512> as Mac>::new_from_slice(value).unwrap();
            m.update(MESSAGE);
            m.finalize().into_bytes().to_vec()
        }),
    ];
    for (mechanism, expected) in &cases {
        assert_eq!(&s.sign(mechanism, generic, MESSAGE).unwrap(), expected);
        // Multi-part gives the same MAC.
        s.sign_init(mechanism, generic).unwrap();
        s.sign_update(&MESSAGE[..10]).unwrap();
        s.sign_update(&MESSAGE[10..]).unwrap();
        assert_eq!(&s.sign_final().unwrap(), expected);
        s.verify(mechanism, generic, MESSAGE, expected).unwrap();
        let mut wrong = expected.clone();
        wrong[0] ^= 1;
        expect_rv(
            s.verify(mechanism, generic, MESSAGE, &wrong),
            RvError::SignatureInvalid,
        );
        expect_rv(
            s.verify(mechanism, generic, MESSAGE, &expected[1..]),
            RvError::SignatureLenRange,
        );
    }
    // An independent check of the hash crate itself, so a wrong `sha2`
    // wiring cannot hide behind two equal wrong answers.
    assert_eq!(sha2::Sha256::digest(b"abc")[0], 0xba);
}

fn usage_flags_and_key_types_are_enforced(t: &Target) {
    let s = t.user_session();
    let verify_only = generic_key(&s, b"verify-only HMAC key", false);
    expect_rv(
        s.sign(&Mechanism::Sha256Hmac, verify_only, MESSAGE),
        RvError::KeyFunctionNotPermitted,
    );
    let no_encrypt = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(KEY.to_vec()),
            Attribute::Encrypt(false),
            Attribute::Decrypt(true),
        ])
        .unwrap();
    let mut iv = [1u8; 12];
    expect_rv(
        s.encrypt(&gcm(&mut iv, b"", 128), no_encrypt, MESSAGE),
        RvError::KeyFunctionNotPermitted,
    );
    let generic = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Token(false),
            Attribute::Value(b"a generic secret that may encrypt".to_vec()),
            Attribute::Encrypt(true),
        ])
        .unwrap();
    let mut iv = [1u8; 12];
    expect_rv(
        s.encrypt(&gcm(&mut iv, b"", 128), generic, MESSAGE),
        RvError::KeyTypeInconsistent,
    );
    if t.kind() == Kind::Mesign {
        // Usage flags are bound into the card blob.
        expect_rv(
            s.update_attributes(no_encrypt, &[Attribute::Encrypt(true)]),
            RvError::AttributeReadOnly,
        );
    }
}

fn mechanism_info_lists_the_secret_key_mechanisms(t: &Target) {
    use cryptoki::mechanism::MechanismType;
    let pkcs11 = t.pkcs11();
    let slot = t.slot();
    for (ty, min, max) in [
        (MechanismType::AES_KEY_GEN, 16, 32),
        (MechanismType::AES_GCM, 16, 32),
        (MechanismType::AES_CBC_PAD, 16, 32),
        (MechanismType::AES_CTR, 16, 32),
        (MechanismType::AES_CMAC, 16, 32),
    ] {
        let info = pkcs11.get_mechanism_info(slot, ty).unwrap();
        assert_eq!(
            (info.min_key_size(), info.max_key_size()),
            (min, max),
            "{ty}"
        );
    }
    let info = pkcs11
        .get_mechanism_info(slot, MechanismType::AES_GCM)
        .unwrap();
    assert!(info.encrypt() && info.decrypt());
    let info = pkcs11
        .get_mechanism_info(slot, MechanismType::SHA256_HMAC)
        .unwrap();
    assert!(info.sign() && info.verify());
}

conformance!(ready =>
    generate_and_read_attributes,
    check_values_and_import_flags,
    aes_gcm_matches_rustcrypto,
    aes_cbc_pad_matches_rustcrypto_with_length_queries,
    aes_ctr_matches_rustcrypto,
    cmac_and_hmac_match_rustcrypto,
    usage_flags_and_key_types_are_enforced,
    mechanism_info_lists_the_secret_key_mechanisms,
);
