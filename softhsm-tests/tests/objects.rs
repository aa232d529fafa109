//! Object rules: X.509 certificates parsed on import, session versus token
//! objects, C_CopyObject, C_SetAttributeValue's read-only, sticky and
//! non-modifiable rules, template errors, the computed CKA_LOCAL /
//! CKA_ALWAYS_SENSITIVE / CKA_NEVER_EXTRACTABLE, and CKA_ALLOWED_MECHANISMS.
//! (Private objects hidden before login: `sessions.rs`, which may log out.)

use cryptoki::error::RvError;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use softhsm_tests::der::{first_element, tlv};
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::verify::Curve;
use softhsm_tests::{conformance, expect_rv, Divergence, Target, TEST_CERTIFICATE};

conformance!(ready =>
    certificate_attributes_come_from_the_der,
    certificate_contradicting_its_der_is_refused,
    session_objects_live_with_their_session,
    copy_object_and_modifiable,
    set_attribute_rules_read_only_and_sticky,
    template_errors,
    computed_key_attributes,
    allowed_mechanisms_are_enforced_at_init,
);

/// A byte-string attribute, or None when absent.
fn bytes(s: &Session, object: ObjectHandle, ty: AttributeType) -> Option<Vec<u8>> {
    match s
        .get_attributes(object, &[ty])
        .expect("C_GetAttributeValue")
        .pop()?
    {
        Attribute::Issuer(v)
        | Attribute::SerialNumber(v)
        | Attribute::Subject(v)
        | Attribute::Value(v)
        | Attribute::Label(v)
        | Attribute::CheckValue(v) => Some(v),
        Attribute::StartDate(d) | Attribute::EndDate(d) => {
            Some([&d.year[..], &d.month[..], &d.day[..]].concat())
        }
        other => panic!("{ty:?}: {other:?}"),
    }
}

/// (serial INTEGER, issuer Name, subject Name) of the test certificate, read
/// independently of the daemon's X.509 parser.
fn certificate_parts() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (_, certificate, _) = tlv(TEST_CERTIFICATE).unwrap();
    let (_, mut tbs, _) = tlv(certificate).unwrap();
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs).unwrap().2;
    }
    let serial = first_element(tbs).unwrap().to_vec();
    let after_signature = tlv(tlv(tbs).unwrap().2).unwrap().2;
    let issuer = first_element(after_signature).unwrap().to_vec();
    let after_validity = tlv(tlv(after_signature).unwrap().2).unwrap().2;
    let subject = first_element(after_validity).unwrap().to_vec();
    (serial, issuer, subject)
}

fn certificate_template(label: &str) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(TEST_CERTIFICATE.to_vec()),
    ]
}

fn certificate_attributes_come_from_the_der(t: &Target) {
    let s = t.user_session();
    let (serial, issuer, subject) = certificate_parts();
    let bare = certificate_template("objects-cert-bare");
    let handle = if t.diverges(Divergence::SoftHsmDoesNotParseCertificates) {
        expect_rv(s.create_object(&bare), RvError::TemplateIncomplete);
        let mut with_subject = bare.clone();
        with_subject.push(Attribute::Subject(subject.clone()));
        let h = s.create_object(&with_subject).expect("C_CreateObject");
        assert_eq!(bytes(&s, h, AttributeType::Issuer), Some(Vec::new()));
        return;
    } else {
        s.create_object(&bare)
            .expect("C_CreateObject of a certificate with CKA_VALUE only")
    };
    assert_eq!(bytes(&s, handle, AttributeType::Subject), Some(subject));
    assert_eq!(bytes(&s, handle, AttributeType::Issuer), Some(issuer));
    assert_eq!(bytes(&s, handle, AttributeType::SerialNumber), Some(serial));
    let start = bytes(&s, handle, AttributeType::StartDate).unwrap();
    let end = bytes(&s, handle, AttributeType::EndDate).unwrap();
    assert_eq!(
        (start.len(), end.len()),
        (8, 8),
        "CK_DATEs from the validity"
    );
    assert!(start < end);
    // Derived attributes do not change; restating them is fine.
    expect_rv(
        s.update_attributes(handle, &[Attribute::Issuer(vec![0x30, 0])]),
        RvError::AttributeReadOnly,
    );
    s.update_attributes(
        handle,
        &[Attribute::Label(b"objects-cert-renamed".to_vec())],
    )
    .expect("CKA_LABEL stays modifiable");
}

fn certificate_contradicting_its_der_is_refused(t: &Target) {
    let s = t.user_session();
    let (serial, _, subject) = certificate_parts();
    let mut wrong_subject = certificate_template("objects-cert-wrong");
    wrong_subject.push(Attribute::Subject(b"\x30\x00".to_vec()));
    let mut wrong_serial = certificate_template("objects-cert-wrong");
    wrong_serial.push(Attribute::Subject(subject.clone()));
    wrong_serial.push(Attribute::SerialNumber(vec![0x02, 0x01, serial[2] ^ 1]));
    let mut junk = certificate_template("objects-cert-junk");
    junk[4] = Attribute::Value(b"-----BEGIN CERTIFICATE-----".to_vec());
    junk.push(Attribute::Subject(subject));
    for template in [wrong_subject, wrong_serial, junk] {
        let created = s.create_object(&template);
        if t.diverges(Divergence::SoftHsmDoesNotParseCertificates) {
            created.expect("SoftHSMv2 stores what it is given");
        } else {
            expect_rv(created, RvError::AttributeValueInvalid);
        }
    }
}

fn data_template(label: &str, token: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(token),
        Attribute::Private(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Application(b"objects".to_vec()),
        Attribute::Value(b"v".to_vec()),
    ]
}

fn session_objects_live_with_their_session(t: &Target) {
    let owner = t.user_session();
    let other = t.user_session();
    let session_object = owner
        .create_object(&data_template("objects-session-obj", false))
        .expect("session object");
    let token_object = owner
        .create_object(&data_template("objects-token-obj", true))
        .expect("token object");
    // Session objects are visible to every session of the application.
    assert_eq!(
        keys::find(&other, &[Attribute::Label(b"objects-session-obj".to_vec())]),
        vec![session_object]
    );
    drop(owner);
    assert!(
        keys::find(&other, &[Attribute::Label(b"objects-session-obj".to_vec())]).is_empty(),
        "a session object outlived its session"
    );
    expect_rv(
        other.get_attributes(session_object, &[AttributeType::Label]),
        RvError::ObjectHandleInvalid,
    );
    assert_eq!(
        keys::find(&other, &[Attribute::Label(b"objects-token-obj".to_vec())]),
        vec![token_object]
    );
    other.destroy_object(token_object).expect("C_DestroyObject");
}

fn copy_object_and_modifiable(t: &Target) {
    let s = t.user_session();
    let original = s
        .create_object(&data_template("objects-copy-src", false))
        .expect("C_CreateObject");
    let mut uncopyable = data_template("objects-copy-no", false);
    uncopyable.push(Attribute::Copyable(false));
    let uncopyable = s.create_object(&uncopyable).expect("C_CreateObject");
    let copy = s
        .copy_object(
            original,
            &[
                Attribute::Label(b"objects-copy-dst".to_vec()),
                Attribute::Modifiable(false),
            ],
        )
        .expect("C_CopyObject");
    assert_ne!(copy, original);
    assert_eq!(bytes(&s, copy, AttributeType::Value), Some(b"v".to_vec()));
    assert_eq!(
        bytes(&s, original, AttributeType::Label),
        Some(b"objects-copy-src".to_vec())
    );
    // The copy is frozen; copying it cannot make it modifiable again.
    let frozen = s.update_attributes(copy, &[Attribute::Label(b"x".to_vec())]);
    expect_rv(frozen, RvError::ActionProhibited);
    expect_rv(
        s.copy_object(copy, &[Attribute::Modifiable(true)]),
        RvError::AttributeReadOnly,
    );
    // An object that may not be copied is not.
    expect_rv(s.copy_object(uncopyable, &[]), RvError::ActionProhibited);
}

fn set_attribute_rules_read_only_and_sticky(t: &Target) {
    let s = t.user_session();
    let data = s
        .create_object(&data_template("objects-set", false))
        .expect("C_CreateObject");
    expect_rv(
        s.update_attributes(data, &[Attribute::Class(ObjectClass::CERTIFICATE)]),
        RvError::AttributeReadOnly,
    );
    expect_rv(
        s.update_attributes(data, &[Attribute::Modulus(vec![1])]),
        RvError::AttributeTypeInvalid,
    );
    let pair = keys::generate(&s, KeySpec::Ec(Curve::P256), "objects-sticky");
    expect_rv(
        s.update_attributes(pair.private, &[Attribute::Sensitive(false)]),
        RvError::AttributeReadOnly,
    );
    expect_rv(
        s.update_attributes(pair.private, &[Attribute::Extractable(true)]),
        RvError::AttributeReadOnly,
    );
    expect_rv(
        s.update_attributes(pair.private, &[Attribute::Local(false)]),
        RvError::AttributeReadOnly,
    );
    s.update_attributes(
        pair.private,
        &[Attribute::Label(b"objects-sticky-2".to_vec())],
    )
    .expect("CKA_LABEL is modifiable");
}

fn template_errors(t: &Target) {
    let s = t.user_session();
    // No class.
    expect_rv(
        s.create_object(&[Attribute::Token(false), Attribute::Label(b"x".to_vec())]),
        RvError::TemplateIncomplete,
    );
    // A certificate without its value.
    let mut no_value = certificate_template("objects-no-value");
    no_value.remove(4);
    let (_, _, subject) = certificate_parts();
    no_value.push(Attribute::Subject(subject));
    expect_rv(s.create_object(&no_value), RvError::TemplateIncomplete);
    // An attribute the class does not have.
    let mut foreign = data_template("objects-foreign", false);
    foreign.push(Attribute::ModulusBits(2048.into()));
    expect_rv(s.create_object(&foreign), RvError::AttributeTypeInvalid);
    // A computed attribute given by the application.
    let mut local = data_template("objects-local", false);
    local.push(Attribute::Local(true));
    let refused = s.create_object(&local);
    if t.diverges(Divergence::SoftHsmLocalOnDataIsTypeInvalid) {
        expect_rv(refused, RvError::AttributeTypeInvalid);
    } else {
        expect_rv(refused, RvError::AttributeReadOnly);
    }
    // Key pair templates that contradict the mechanism.
    let inconsistent = s.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &[
            Attribute::EcParams(Curve::P256.params_der()),
            Attribute::Class(ObjectClass::PRIVATE_KEY),
        ],
        &[Attribute::Token(false)],
    );
    if t.diverges(Divergence::SoftHsmKeyPairClassValueInvalid) {
        expect_rv(inconsistent, RvError::AttributeValueInvalid);
    } else {
        expect_rv(inconsistent, RvError::TemplateInconsistent);
    }
    // No curve.
    expect_rv(
        s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(false)],
            &[Attribute::Token(false)],
        ),
        RvError::TemplateIncomplete,
    );
}

fn flags(s: &Session, key: ObjectHandle) -> (bool, bool, bool) {
    let get = |ty| keys::flag(s, key, ty).unwrap_or_else(|| panic!("{ty:?} missing"));
    (
        get(AttributeType::Local),
        get(AttributeType::AlwaysSensitive),
        get(AttributeType::NeverExtractable),
    )
}

fn computed_key_attributes(t: &Target) {
    let s = t.user_session();
    let pair = keys::generate(&s, KeySpec::Ec(Curve::P256), "objects-computed");
    assert_eq!(flags(&s, pair.private), (true, true, true));
    assert_eq!(
        keys::flag(&s, pair.public, AttributeType::Local),
        Some(true)
    );

    let (_, loose) = s
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::EcParams(Curve::P256.params_der()),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ],
        )
        .expect("C_GenerateKeyPair of an exportable key");
    assert_eq!(flags(&s, loose), (true, false, false));
    // Tightening later does not rewrite history.
    s.update_attributes(
        loose,
        &[Attribute::Sensitive(true), Attribute::Extractable(false)],
    )
    .expect("sensitivity may tighten");
    assert_eq!(flags(&s, loose), (true, false, false));

    // An imported public key is not local.
    let point = keys::bytes(&s, pair.public, AttributeType::EcPoint).unwrap();
    let imported = s
        .create_object(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(cryptoki::object::KeyType::EC),
            Attribute::Token(false),
            Attribute::EcParams(Curve::P256.params_der()),
            Attribute::EcPoint(point),
        ])
        .expect("C_CreateObject of an EC public key");
    assert_eq!(keys::flag(&s, imported, AttributeType::Local), Some(false));
}

fn allowed_mechanisms_are_enforced_at_init(t: &Target) {
    let s = t.user_session();
    let (_, private) = s
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            &[
                Attribute::Token(false),
                Attribute::Sign(true),
                Attribute::AllowedMechanisms(vec![MechanismType::SHA256_RSA_PKCS]),
            ],
        )
        .expect("C_GenerateKeyPair with CKA_ALLOWED_MECHANISMS");
    s.sign(&Mechanism::Sha256RsaPkcs, private, b"allowed")
        .expect("the allowed mechanism signs");
    expect_rv(
        s.sign_init(&Mechanism::RsaPkcs, private),
        RvError::MechanismInvalid,
    );
}
