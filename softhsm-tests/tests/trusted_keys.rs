//! CKA_TRUSTED, which only the SO sets, against our module and SoftHSMv2:
//! a key marked trusted is what CKA_WRAP_WITH_TRUSTED keys may leave
//! under, so it must be a key nobody knows. Ours trusts public keys and
//! secret keys generated on the token that were never extractable; on
//! SoftHSMv2 the SO can import a trusted key of known value, and the suite
//! then wraps a guarded key out under it and opens it with RustCrypto
//! `aes-kw` ([`Divergence::SoftHsmTrustsKeysOfKnownValue`]).
//!
//! The case logs the user out and the SO in, so it has a file (a process)
//! of its own: login state is per application.

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use softhsm_tests::target::{login_user, pin};
use softhsm_tests::{conformance, expect_rv, Divergence, Target, SO_PIN};

const KNOWN: [u8; 16] = *b"attacker knows!!";
const SECRET: [u8; 32] = *b"a key that needs a trusted KEK..";

/// A public token AES key that wraps (and does nothing else).
fn wrapping_key(extra: &[Attribute]) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
    ];
    template.extend_from_slice(extra);
    template
}

fn only_unknown_keys_may_be_trusted(t: &Target) {
    let softhsm = t.diverges(Divergence::SoftHsmTrustsKeysOfKnownValue);
    let s = t.user_session();
    let known = s
        .create_object(&wrapping_key(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(KNOWN.to_vec()),
        ]))
        .expect("the user's imported wrapping key");
    let sealed = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &wrapping_key(&[
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ]),
        )
        .expect("a generated, never extractable wrapping key");
    s.logout().expect("user C_Logout");

    let so = t.session();
    so.login(UserType::So, Some(&pin(SO_PIN)))
        .expect("SO C_Login");
    // The SO makes a key of known value trusted: by importing it trusted,
    // or by marking the user's imported key.
    let imported_trusted = so.create_object(&wrapping_key(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(KNOWN.to_vec()),
        Attribute::Trusted(true),
        Attribute::Label(b"trusted known key".to_vec()),
    ]));
    let marked = so.update_attributes(known, &[Attribute::Trusted(true)]);
    let sealed_marked = so.update_attributes(sealed, &[Attribute::Trusted(true)]);
    let trusted_known = if softhsm {
        // SoftHSMv2 takes CKA_TRUSTED only at creation.
        expect_rv(marked, RvError::AttributeReadOnly);
        expect_rv(sealed_marked, RvError::AttributeReadOnly);
        imported_trusted.expect("SoftHSMv2 imports a trusted key of known value")
    } else {
        expect_rv(imported_trusted, RvError::AttributeReadOnly);
        expect_rv(marked, RvError::AttributeValueInvalid);
        sealed_marked.expect("the SO trusts a generated, never extractable key");
        known
    };
    so.logout().expect("SO C_Logout");
    drop(so);

    login_user(&s);
    // Made now: C_Logout destroys private session objects.
    let guarded = s
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(SECRET.to_vec()),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(true),
        ])
        .expect("the guarded key");
    let out = s.wrap_key(&Mechanism::AesKeyWrap, trusted_known, guarded);
    if softhsm {
        let out = out.expect("SoftHSMv2 wraps under the trusted known key");
        assert_eq!(
            aes_kw::KekAes128::from(KNOWN).unwrap_vec(&out).unwrap(),
            SECRET,
            "the guarded key came out in clear"
        );
    } else {
        expect_rv(out, RvError::KeyNotWrappable);
    }
    if !softhsm {
        let out = s
            .wrap_key(&Mechanism::AesKeyWrap, sealed, guarded)
            .expect("the guarded key leaves under the trusted key");
        assert_eq!(out.len(), SECRET.len() + 8);
    }
    let mut keys = vec![known, sealed];
    if trusted_known != known {
        keys.push(trusted_known);
    }
    for key in keys {
        s.destroy_object(key).expect("C_DestroyObject");
    }
}

conformance!(ready => only_unknown_keys_may_be_trusted);
