//! The known PKCS#11 API attacks (Clulow 2003; the Tookan study,
//! Bortolozzo, Centenaro, Focardi and Steel 2010), one case each, against
//! our module and SoftHSMv2. Each case mounts the attack and shows where
//! it stops; where SoftHSMv2 lets it through, the case says so through a
//! named [`Divergence`] and shows the attack succeeding there, so that the
//! difference is evidence rather than an assumption.
//!
//! Keys are session objects with known values where the attacker would
//! know them, so that "the attack worked" is checked against the value.

use cryptoki::error::RvError;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::{
    CKA_CLASS, CKA_DECRYPT, CKA_ENCRYPT, CKA_EXTRACTABLE, CKA_KEY_TYPE, CKA_LABEL,
    CKA_PRIVATE_EXPONENT, CKA_SENSITIVE, CKA_TOKEN, CKA_UNWRAP, CKA_UNWRAP_TEMPLATE, CKA_VALUE,
    CKA_WRAP, CKK_AES, CKO_SECRET_KEY, CKR_ATTRIBUTE_SENSITIVE, CKR_OK, CK_ATTRIBUTE_TYPE,
    CK_ULONG,
};
use softhsm_tests::ffi::Output;
use softhsm_tests::keys::{self, attribute, bytes, find, flag};
use softhsm_tests::{conformance, expect_rv, Divergence, Kind, Target};

const SECRET: [u8; 32] = *b"the victim's AES key, 32 bytes..";
const KNOWN: [u8; 16] = *b"attacker knows!!";

fn secret_key(
    s: &Session,
    value: &[u8],
    extra: &[Attribute],
) -> cryptoki::error::Result<ObjectHandle> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
        Attribute::Value(value.to_vec()),
    ];
    template.extend_from_slice(extra);
    s.create_object(&template)
}

/// A sensitive victim key that may be wrapped (extractable).
fn victim(s: &Session, extra: &[Attribute]) -> ObjectHandle {
    let mut template = vec![
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ];
    template.extend_from_slice(extra);
    secret_key(s, &SECRET, &template).expect("C_CreateObject victim key")
}

/// RFC 3394 unwrapping (§2.2.2) with the token's own C_Decrypt under
/// CKM_AES_ECB as the block cipher: what an attacker holding a key that
/// both wraps and decrypts can do.
fn unwrap_through_decrypt(s: &Session, key: ObjectHandle, wrapped: &[u8]) -> Vec<u8> {
    let n = wrapped.len() / 8 - 1;
    let mut a: [u8; 8] = wrapped[..8].try_into().unwrap();
    let mut r: Vec<[u8; 8]> = wrapped[8..]
        .chunks(8)
        .map(|c| c.try_into().unwrap())
        .collect();
    for j in (0..6).rev() {
        for i in (1..=n).rev() {
            let t = ((n * j + i) as u64).to_be_bytes();
            let mut block = [0u8; 16];
            for k in 0..8 {
                block[k] = a[k] ^ t[k];
            }
            block[8..].copy_from_slice(&r[i - 1]);
            let b = s
                .decrypt(&Mechanism::AesEcb, key, &block)
                .expect("C_Decrypt ECB");
            a.copy_from_slice(&b[..8]);
            r[i - 1].copy_from_slice(&b[8..]);
        }
    }
    assert_eq!(a, [0xa6; 8], "the RFC 3394 integrity check");
    r.concat()
}

/// Wrap/decrypt (Clulow): a key that may both wrap and decrypt wraps the
/// victim, then decrypts the wrapped bytes. Refused when the key is made,
/// whichever way it is made.
fn wrap_and_decrypt_on_one_key_is_refused_at_creation(t: &Target) {
    let s = t.user_session();
    let both = [Attribute::Wrap(true), Attribute::Decrypt(true)];
    let forge = [Attribute::Unwrap(true), Attribute::Encrypt(true)];
    let generate = |roles: &[Attribute]| {
        let mut template = vec![Attribute::Token(false), Attribute::ValueLen(16.into())];
        template.extend_from_slice(roles);
        s.generate_key(&Mechanism::AesKeyGen, &template)
    };
    if t.diverges(Divergence::SoftHsmAllowsConflictingKeyRoles) {
        // The attack, mounted: K wraps the sensitive victim, then K's
        // C_Decrypt (AES-ECB) undoes the wrap block by block.
        let k = generate(&both).expect("SoftHSMv2 accepts CKA_WRAP with CKA_DECRYPT");
        let target = victim(&s, &[]);
        let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, k, target).unwrap();
        let clear = unwrap_through_decrypt(&s, k, &wrapped);
        assert_eq!(clear, SECRET, "the sensitive key came out in clear");
        assert!(generate(&forge).is_ok());
        return;
    }
    for roles in [&both[..], &forge[..]] {
        expect_rv(generate(roles), RvError::TemplateInconsistent);
        expect_rv(secret_key(&s, &KNOWN, roles), RvError::TemplateInconsistent);
    }
    let decrypting_unwrap = [Attribute::Unwrap(true), Attribute::Decrypt(true)];
    expect_rv(generate(&decrypting_unwrap), RvError::TemplateInconsistent);
    // A key that asks only to wrap is no data key by default, so it is
    // accepted and cannot decrypt.
    let k = generate(&[Attribute::Wrap(true)]).expect("a wrap-only key");
    assert!(matches!(
        attribute(&s, k, AttributeType::Decrypt),
        Some(Attribute::Decrypt(false))
    ));
    let target = victim(&s, &[]);
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, k, target).unwrap();
    expect_rv(
        s.decrypt(&Mechanism::AesCbcPad([0; 16]), k, &wrapped),
        RvError::KeyFunctionNotPermitted,
    );
    // Usage flags cannot be added afterwards either.
    expect_rv(
        s.update_attributes(k, &[Attribute::Decrypt(true)]),
        RvError::AttributeReadOnly,
    );
}

fn oaep_sha1() -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        MechanismType::SHA1,
        PkcsMgfType::MGF1_SHA1,
        PkcsOaepSource::empty(),
    ))
}

/// Public-wrap / private-decrypt: wrap the victim under an RSA public key
/// whose private half on the token decrypts, then C_Decrypt. Refused at
/// generation, and for an imported copy of the public key at C_WrapKey;
/// a key marked CKA_WRAP_WITH_TRUSTED is refused under any untrusted key.
fn public_wrap_private_decrypt_is_refused(t: &Target) {
    let s = t.user_session();
    let generated = keys::rsa_2048_pair(
        &s,
        &[Attribute::Wrap(true)],
        &[Attribute::Decrypt(true), Attribute::Sign(false)],
    );
    let (public, private) = if t.diverges(Divergence::SoftHsmAllowsConflictingKeyRoles) {
        generated.expect("SoftHSMv2 accepts a wrapping public key with a decrypting private key")
    } else {
        expect_rv(generated, RvError::TemplateInconsistent);
        keys::rsa_2048_pair(
            &s,
            &[Attribute::Encrypt(true)],
            &[Attribute::Decrypt(true), Attribute::Sign(false)],
        )
        .expect("an encryption key pair")
    };
    // The attacker imports a copy of the public half that may wrap.
    let modulus = bytes(&s, public, AttributeType::Modulus).unwrap();
    let copy = s
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(false),
            Attribute::Modulus(modulus),
            Attribute::PublicExponent(vec![1, 0, 1]),
            Attribute::Wrap(true),
        ])
        .expect("C_CreateObject of the public key");
    let target = victim(&s, &[]);
    let wrapped = s.wrap_key(&oaep_sha1(), copy, target);
    if t.diverges(Divergence::SoftHsmAllowsConflictingKeyRoles) {
        let clear = s
            .decrypt(&oaep_sha1(), private, &wrapped.expect("C_WrapKey"))
            .unwrap();
        assert_eq!(clear, SECRET, "the sensitive key came out in clear");
    } else {
        expect_rv(wrapped, RvError::KeyFunctionNotPermitted);
    }
    // With CKA_WRAP_WITH_TRUSTED the victim needs a CKA_TRUSTED wrapping
    // key, which only the SO can make: no public key the user made or
    // imported is one.
    let (untrusted, _) = keys::rsa_2048_pair(
        &s,
        &[Attribute::Wrap(true)],
        &[Attribute::Unwrap(true), Attribute::Sign(false)],
    )
    .unwrap();
    let guarded = victim(&s, &[Attribute::WrapWithTrusted(true)]);
    expect_rv(
        s.wrap_key(&oaep_sha1(), untrusted, guarded),
        RvError::KeyNotWrappable,
    );
}

/// Direct read: CKA_VALUE of a sensitive or unextractable key, and the
/// private exponent of an RSA key, are CKR_ATTRIBUTE_SENSITIVE.
fn sensitive_and_unextractable_values_cannot_be_read(t: &Target) {
    let s = t.user_session();
    let sensitive = victim(&s, &[]);
    let unextractable = secret_key(
        &s,
        &SECRET,
        &[Attribute::Sensitive(false), Attribute::Extractable(false)],
    )
    .unwrap();
    let (_, private) = keys::rsa_2048_pair(&s, &[], &[Attribute::Sign(true)]).unwrap();
    for (key, ty) in [
        (sensitive, CKA_VALUE),
        (unextractable, CKA_VALUE),
        (private, CKA_PRIVATE_EXPONENT),
    ] {
        let (rv, attrs) = t
            .raw()
            .attributes(s.handle(), key.handle(), &[(ty, Output::Bytes(512))]);
        assert_eq!(rv, CKR_ATTRIBUTE_SENSITIVE, "{ty:#x}");
        assert!(attrs[0].unavailable());
    }
}

/// Sticky attributes: CKA_SENSITIVE only goes false → true, CKA_EXTRACTABLE
/// only true → false, CKA_WRAP_WITH_TRUSTED only false → true, whether by
/// C_SetAttributeValue or by C_CopyObject; CKA_ALWAYS_SENSITIVE and
/// CKA_NEVER_EXTRACTABLE remember the key's past.
fn sticky_attributes_only_tighten(t: &Target) {
    let s = t.user_session();
    let key = victim(&s, &[Attribute::WrapWithTrusted(true)]);
    for downgrade in [
        Attribute::Sensitive(false),
        Attribute::WrapWithTrusted(false),
    ] {
        expect_rv(
            s.update_attributes(key, std::slice::from_ref(&downgrade)),
            RvError::AttributeReadOnly,
        );
        let copied = s.copy_object(key, std::slice::from_ref(&downgrade));
        // Ours copies no card key at all (its blob is bound to its object
        // id); SoftHSMv2 copies but refuses the downgrade.
        let want = match t.kind() {
            Kind::Mesign => RvError::ActionProhibited,
            Kind::SoftHsm => RvError::AttributeReadOnly,
        };
        expect_rv(copied, want);
    }
    assert_eq!(flag(&s, key, AttributeType::Sensitive), Some(true));
    s.update_attributes(key, &[Attribute::Extractable(false)])
        .expect("tightening CKA_EXTRACTABLE");
    expect_rv(
        s.update_attributes(key, &[Attribute::Extractable(true)]),
        RvError::AttributeReadOnly,
    );
    // Imported: never "always sensitive" nor "never extractable", even
    // after tightening.
    for ty in [
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
    ] {
        assert_eq!(flag(&s, key, ty), Some(false), "{ty:?}");
    }
    let loose = secret_key(
        &s,
        &SECRET,
        &[Attribute::Sensitive(false), Attribute::Extractable(true)],
    )
    .unwrap();
    s.update_attributes(loose, &[Attribute::Sensitive(true)])
        .unwrap();
    assert_eq!(flag(&s, loose, AttributeType::AlwaysSensitive), Some(false));
    let generated = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    for ty in [
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
    ] {
        assert_eq!(flag(&s, generated, ty), Some(true), "{ty:?}");
    }
}

/// Wrap under a key the attacker made and knows: the victim must be
/// extractable, and with CKA_WRAP_WITH_TRUSTED the wrapping key trusted.
fn wrap_under_an_attacker_known_key_is_refused(t: &Target) {
    let s = t.user_session();
    let known = secret_key(
        &s,
        &KNOWN,
        &[
            Attribute::Wrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ],
    )
    .expect("the attacker's wrapping key");
    let guarded = victim(&s, &[Attribute::WrapWithTrusted(true)]);
    expect_rv(
        s.wrap_key(&Mechanism::AesKeyWrap, known, guarded),
        RvError::KeyNotWrappable,
    );
    let unextractable = secret_key(
        &s,
        &SECRET,
        &[Attribute::Sensitive(true), Attribute::Extractable(false)],
    )
    .unwrap();
    expect_rv(
        s.wrap_key(&Mechanism::AesKeyWrap, known, unextractable),
        RvError::KeyUnextractable,
    );
    // The control: an extractable key without CKA_WRAP_WITH_TRUSTED is
    // exactly what may leave under any wrapping key, and does.
    let free = victim(&s, &[]);
    let wrapped = s.wrap_key(&Mechanism::AesKeyWrap, known, free).unwrap();
    assert_eq!(
        aes_kw::KekAes128::from(KNOWN).unwrap_vec(&wrapped).unwrap(),
        SECRET
    );
}

fn c_bool(v: bool) -> Vec<u8> {
    vec![u8::from(v)]
}

fn c_ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// Unwrap into a weaker key: the unwrapping key's CKA_UNWRAP_TEMPLATE
/// says sensitive and unextractable; a template asking otherwise is
/// CKR_TEMPLATE_INCONSISTENT, and what unwraps is as the template says.
fn unwrap_into_a_weaker_key_is_refused(t: &Target) {
    let s = t.user_session();
    let label = format!("unwrapping key of {}", t.kind().name());
    let flat: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = vec![
        (CKA_LABEL, label.as_bytes().to_vec()),
        (CKA_CLASS, c_ulong(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, c_ulong(CKK_AES)),
        (CKA_TOKEN, c_bool(false)),
        (CKA_VALUE, KNOWN.to_vec()),
        (CKA_WRAP, c_bool(true)),
        (CKA_UNWRAP, c_bool(true)),
        (CKA_ENCRYPT, c_bool(false)),
        (CKA_DECRYPT, c_bool(false)),
    ];
    let required = vec![
        (CKA_SENSITIVE, c_bool(true)),
        (CKA_EXTRACTABLE, c_bool(false)),
    ];
    let (rv, _) =
        t.raw()
            .create_object_nested(s.handle(), &flat, &[(CKA_UNWRAP_TEMPLATE, required)]);
    assert_eq!(rv, CKR_OK, "C_CreateObject with CKA_UNWRAP_TEMPLATE");
    let found = find(&s, &[Attribute::Label(label.into_bytes())]);
    assert_eq!(found.len(), 1);
    let unwrapping = found[0];
    // The nested template reads back as two CK_ATTRIBUTE entries.
    let (rv, attrs) = t.raw().attributes(
        s.handle(),
        unwrapping.handle(),
        &[(CKA_UNWRAP_TEMPLATE, Output::Null)],
    );
    assert_eq!(rv, CKR_OK);
    assert_eq!(
        attrs[0].len as usize,
        2 * std::mem::size_of::<cryptoki_sys::CK_ATTRIBUTE>()
    );
    let wrapped = aes_kw::KekAes128::from(KNOWN).wrap_vec(&SECRET).unwrap();
    let template = |extra: Attribute| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Encrypt(true),
            extra,
        ]
    };
    for weaker in [Attribute::Sensitive(false), Attribute::Extractable(true)] {
        expect_rv(
            s.unwrap_key(
                &Mechanism::AesKeyWrap,
                unwrapping,
                &wrapped,
                &template(weaker),
            ),
            RvError::TemplateInconsistent,
        );
    }
    let mut restated = template(Attribute::Sensitive(true));
    restated.push(Attribute::Extractable(false));
    let key = s
        .unwrap_key(&Mechanism::AesKeyWrap, unwrapping, &wrapped, &restated)
        .expect("C_UnwrapKey restating the unwrap template");
    assert_eq!(flag(&s, key, AttributeType::Sensitive), Some(true));
    assert_eq!(flag(&s, key, AttributeType::Extractable), Some(false));
    // PKCS#11 3.0 §4.9: the new key gets the union of both templates.
    let silent = s.unwrap_key(
        &Mechanism::AesKeyWrap,
        unwrapping,
        &wrapped,
        &template(Attribute::Label(b"unwrapped".to_vec())),
    );
    if t.diverges(Divergence::SoftHsmUnwrapTemplateNotMerged) {
        expect_rv(silent, RvError::TemplateInconsistent);
    } else {
        let key = silent.expect("C_UnwrapKey within the unwrap template");
        assert_eq!(flag(&s, key, AttributeType::Sensitive), Some(true));
        assert_eq!(flag(&s, key, AttributeType::Extractable), Some(false));
    }
}

/// An RSA key that unwraps cannot decrypt: the wrapped key does not come
/// out through C_Decrypt.
fn an_unwrapping_rsa_key_does_not_decrypt(t: &Target) {
    let s = t.user_session();
    let (public, private) = keys::rsa_2048_pair(
        &s,
        &[Attribute::Wrap(true)],
        &[
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
        ],
    )
    .unwrap();
    let target = victim(&s, &[]);
    let wrapped = s.wrap_key(&oaep_sha1(), public, target).unwrap();
    expect_rv(
        s.decrypt(&oaep_sha1(), private, &wrapped),
        RvError::KeyFunctionNotPermitted,
    );
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
    ];
    assert!(s
        .unwrap_key(&oaep_sha1(), private, &wrapped, &template)
        .is_ok());
    if !t.diverges(Divergence::SoftHsmAllowsConflictingKeyRoles) {
        expect_rv(
            keys::rsa_2048_pair(
                &s,
                &[],
                &[
                    Attribute::Unwrap(true),
                    Attribute::Decrypt(true),
                    Attribute::Sign(false),
                ],
            ),
            RvError::TemplateInconsistent,
        );
    }
}

/// Unwrap-then-wrap: whoever may unwrap under K unwraps a key that was
/// wrapped under K as extractable and wraps it out again under a key they
/// know, so every key ever wrapped under K comes out in clear. With an
/// unwrap-only RSA key the same steps decrypt any short OAEP ciphertext
/// (unwrapped as a generic secret). Ours refuses the extractable unwrap
/// (CKR_TEMPLATE_INCONSISTENT) unless K's CKA_UNWRAP_TEMPLATE allows it,
/// and the key it does unwrap does not leave (CKR_KEY_UNEXTRACTABLE).
fn unwrap_then_wrap_is_refused(t: &Target) {
    let s = t.user_session();
    let softhsm = t.diverges(Divergence::SoftHsmUnwrapsExtractableKeys);
    let k = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
            ],
        )
        .expect("the unwrapping key K");
    let wrapped = s
        .wrap_key(&Mechanism::AesKeyWrap, k, victim(&s, &[]))
        .expect("the victim wrapped under K");
    let known = secret_key(
        &s,
        &KNOWN,
        &[
            Attribute::Wrap(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
        ],
    )
    .expect("the attacker's wrapping key");
    let new_key = |key_type: KeyType, extractable: bool| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(key_type),
            Attribute::Token(false),
            Attribute::Extractable(extractable),
        ]
    };
    let exportable = s.unwrap_key(
        &Mechanism::AesKeyWrap,
        k,
        &wrapped,
        &new_key(KeyType::AES, true),
    );
    if softhsm {
        let copy = exportable.expect("SoftHSMv2 unwraps an extractable key");
        let out = s.wrap_key(&Mechanism::AesKeyWrap, known, copy).unwrap();
        assert_eq!(
            aes_kw::KekAes128::from(KNOWN).unwrap_vec(&out).unwrap(),
            SECRET,
            "the victim key came out in clear"
        );
    } else {
        expect_rv(exportable, RvError::TemplateInconsistent);
        let copy = s
            .unwrap_key(
                &Mechanism::AesKeyWrap,
                k,
                &wrapped,
                &new_key(KeyType::AES, false),
            )
            .expect("an unextractable unwrap");
        expect_rv(
            s.wrap_key(&Mechanism::AesKeyWrap, known, copy),
            RvError::KeyUnextractable,
        );
    }

    // The RSA form: an unwrap-only RSA key as an OAEP decryption oracle.
    let (public, private) = keys::rsa_2048_pair(
        &s,
        &[Attribute::Wrap(true)],
        &[
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
        ],
    )
    .unwrap();
    let n = bytes(&s, public, AttributeType::Modulus).unwrap();
    let e = bytes(&s, public, AttributeType::PublicExponent).unwrap();
    let token_public = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&n),
        rsa::BigUint::from_bytes_be(&e),
    )
    .unwrap();
    let message = b"for the private key's owner only";
    let ciphertext = token_public
        .encrypt(
            &mut rsa::rand_core::OsRng,
            rsa::Oaep::new::<sha1::Sha1>(),
            message,
        )
        .unwrap();
    let opened = s.unwrap_key(
        &oaep_sha1(),
        private,
        &ciphertext,
        &new_key(KeyType::GENERIC_SECRET, true),
    );
    if softhsm {
        let secret = opened.expect("SoftHSMv2 unwraps an extractable generic secret");
        let out = s
            .wrap_key(&Mechanism::AesKeyWrapPad, known, secret)
            .unwrap();
        assert_eq!(
            aes_kw::KekAes128::from(KNOWN)
                .unwrap_with_padding_vec(&out)
                .unwrap(),
            message,
            "the ciphertext came out decrypted"
        );
    } else {
        expect_rv(opened, RvError::TemplateInconsistent);
    }

    // The owner's choice: a key whose CKA_UNWRAP_TEMPLATE says
    // CKA_EXTRACTABLE true unwraps extractable keys, on both tokens.
    let label = format!("exporting unwrapping key of {}", t.kind().name());
    let flat: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> = vec![
        (CKA_LABEL, label.as_bytes().to_vec()),
        (CKA_CLASS, c_ulong(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, c_ulong(CKK_AES)),
        (CKA_TOKEN, c_bool(false)),
        (CKA_VALUE, SECRET.to_vec()),
        (CKA_WRAP, c_bool(true)),
        (CKA_UNWRAP, c_bool(true)),
        (CKA_ENCRYPT, c_bool(false)),
        (CKA_DECRYPT, c_bool(false)),
    ];
    let allows = vec![(CKA_EXTRACTABLE, c_bool(true))];
    let (rv, _) = t
        .raw()
        .create_object_nested(s.handle(), &flat, &[(CKA_UNWRAP_TEMPLATE, allows)]);
    assert_eq!(rv, CKR_OK, "C_CreateObject with CKA_UNWRAP_TEMPLATE");
    let exporting = find(&s, &[Attribute::Label(label.into_bytes())])[0];
    let wrapped = aes_kw::KekAes256::from(SECRET).wrap_vec(&KNOWN).unwrap();
    let moved = s
        .unwrap_key(
            &Mechanism::AesKeyWrap,
            exporting,
            &wrapped,
            &new_key(KeyType::AES, true),
        )
        .expect("an extractable unwrap the unwrap template allows");
    let out = s.wrap_key(&Mechanism::AesKeyWrap, known, moved).unwrap();
    assert_eq!(
        aes_kw::KekAes128::from(KNOWN).unwrap_vec(&out).unwrap(),
        KNOWN
    );
}

conformance!(ready =>
    wrap_and_decrypt_on_one_key_is_refused_at_creation,
    public_wrap_private_decrypt_is_refused,
    sensitive_and_unextractable_values_cannot_be_read,
    sticky_attributes_only_tighten,
    wrap_under_an_attacker_known_key_is_refused,
    unwrap_into_a_weaker_key_is_refused,
    an_unwrapping_rsa_key_does_not_decrypt,
    unwrap_then_wrap_is_refused,
);
