//! Key-pair generation and object look-ups shared by the cases.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use crate::verify::{ec_point_from_attribute, Curve, PublicKey};

/// The key pairs the foundation cases use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with the given modulus size and exponent 65537.
    Rsa(u64),
    /// ECDSA on a NIST curve.
    Ec(Curve),
}

/// Handles of a generated pair.
#[derive(Clone, Copy, Debug)]
pub struct KeyPair {
    /// CKO_PUBLIC_KEY handle.
    pub public: ObjectHandle,
    /// CKO_PRIVATE_KEY handle.
    pub private: ObjectHandle,
}

/// Generates a token key pair labelled `label` with CKA_ID = `label`'s bytes,
/// private half sensitive, unextractable and private.
pub fn generate(session: &Session, spec: KeySpec, label: &str) -> KeyPair {
    let id = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let mechanism = match spec {
        KeySpec::Rsa(bits) => {
            public.push(Attribute::ModulusBits(bits.into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
        KeySpec::Ec(curve) => {
            public.push(Attribute::EcParams(curve.params_der()));
            Mechanism::EccKeyPairGen
        }
    };
    let (public, private) = session
        .generate_key_pair(&mechanism, &public, &private)
        .unwrap_or_else(|e| panic!("C_GenerateKeyPair {spec:?}: {e}"));
    KeyPair { public, private }
}

/// Reads the public key from the token's attributes.
pub fn public_key(session: &Session, spec: KeySpec, public: ObjectHandle) -> PublicKey {
    match spec {
        KeySpec::Rsa(_) => PublicKey::Rsa {
            n: bytes(session, public, AttributeType::Modulus).expect("CKA_MODULUS"),
            e: bytes(session, public, AttributeType::PublicExponent).expect("CKA_PUBLIC_EXPONENT"),
        },
        KeySpec::Ec(curve) => {
            let raw = bytes(session, public, AttributeType::EcPoint).expect("CKA_EC_POINT");
            PublicKey::Ec {
                curve,
                point: ec_point_from_attribute(&raw)
                    .unwrap_or_else(|e| panic!("CKA_EC_POINT: {e}")),
            }
        }
    }
}

/// One attribute, or None when the token did not return it.
pub fn attribute(
    session: &Session,
    object: ObjectHandle,
    kind: AttributeType,
) -> Option<Attribute> {
    session
        .get_attributes(object, &[kind])
        .unwrap_or_else(|e| panic!("C_GetAttributeValue {kind:?}: {e}"))
        .into_iter()
        .next()
}

/// A byte-string attribute.
pub fn bytes(session: &Session, object: ObjectHandle, kind: AttributeType) -> Option<Vec<u8>> {
    match attribute(session, object, kind)? {
        Attribute::Modulus(v)
        | Attribute::PublicExponent(v)
        | Attribute::EcPoint(v)
        | Attribute::EcParams(v)
        | Attribute::Id(v)
        | Attribute::Label(v)
        | Attribute::Value(v)
        | Attribute::Subject(v)
        | Attribute::Application(v) => Some(v),
        other => panic!("{kind:?} is not a byte string: {other:?}"),
    }
}

/// A CK_BBOOL attribute.
pub fn flag(session: &Session, object: ObjectHandle, kind: AttributeType) -> Option<bool> {
    match attribute(session, object, kind)? {
        Attribute::Token(b)
        | Attribute::Private(b)
        | Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::Sign(b)
        | Attribute::Verify(b)
        | Attribute::Local(b)
        | Attribute::AlwaysSensitive(b)
        | Attribute::NeverExtractable(b) => Some(b),
        other => panic!("{kind:?} is not a CK_BBOOL: {other:?}"),
    }
}

/// CKA_CLASS.
pub fn class(session: &Session, object: ObjectHandle) -> ObjectClass {
    match attribute(session, object, AttributeType::Class) {
        Some(Attribute::Class(c)) => c,
        other => panic!("CKA_CLASS: {other:?}"),
    }
}

/// CKA_KEY_TYPE.
pub fn key_type(session: &Session, object: ObjectHandle) -> KeyType {
    match attribute(session, object, AttributeType::KeyType) {
        Some(Attribute::KeyType(k)) => k,
        other => panic!("CKA_KEY_TYPE: {other:?}"),
    }
}

/// C_FindObjects with `template`, all results.
pub fn find(session: &Session, template: &[Attribute]) -> Vec<ObjectHandle> {
    session
        .find_objects(template)
        .unwrap_or_else(|e| panic!("C_FindObjects: {e}"))
}

/// The private key labelled `label`, asserting there is exactly one.
pub fn private_key_by_label(session: &Session, label: &str) -> ObjectHandle {
    let found = find(
        session,
        &[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    );
    assert_eq!(found.len(), 1, "private keys labelled {label:?}");
    found[0]
}

/// The public key labelled `label`, asserting there is exactly one.
pub fn public_key_by_label(session: &Session, label: &str) -> ObjectHandle {
    let found = find(
        session,
        &[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ],
    );
    assert_eq!(found.len(), 1, "public keys labelled {label:?}");
    found[0]
}

/// An RSA-2048 pair on the token (session objects); `private` should say
/// CKA_SIGN, whose default differs between tokens.
pub fn rsa_2048_pair(
    s: &Session,
    public: &[Attribute],
    private: &[Attribute],
) -> cryptoki::error::Result<(ObjectHandle, ObjectHandle)> {
    let mut public_template = vec![
        Attribute::Token(false),
        Attribute::ModulusBits(2048.into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
    ];
    public_template.extend_from_slice(public);
    let mut private_template = vec![Attribute::Token(false)];
    private_template.extend_from_slice(private);
    s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &public_template,
        &private_template,
    )
}
