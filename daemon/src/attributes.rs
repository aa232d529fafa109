//! Object templates: what each object class may carry, the defaults the
//! daemon fills in, and the rules for creating, generating, changing,
//! copying and reading attributes.
//!
//! Attributes are kept in their wire form (see `mesign_proto::attr`) in an
//! [`AttrMap`]. This module is pure: it knows nothing of sessions or the
//! store, so its rules are tested directly.
//!
//! Documented decisions:
//! - Private keys cannot be created from a template: keys are generated on
//!   the card (CKR_TEMPLATE_INCONSISTENT). Secret keys may be, through
//!   [`secret_keys`]: the card wraps the value.
//! - A card key's usage flags (CKA_SIGN, CKA_DECRYPT, CKA_UNWRAP,
//!   CKA_DERIVE) are fixed at generation, because the card binds them to the
//!   key blob; changing them is CKR_ATTRIBUTE_READ_ONLY. CKA_SENSITIVE and
//!   CKA_EXTRACTABLE may still tighten: the stored, stricter value is what
//!   the daemon enforces, the card keeps the policy the key was made with.
//! - CKA_ALWAYS_AUTHENTICATE may be set at generation or tightened later
//!   (false to true), never loosened: a key that wanted a PIN per signature
//!   keeps wanting it.
//! - A certificate's CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER and
//!   CKA_CHECK_VALUE are derived from its CKA_VALUE (see
//!   [`crate::certificate`]) and cannot be changed afterwards.
//! - A private key may not be both CKA_DECRYPT and CKA_UNWRAP (a wrapped key
//!   could otherwise be decrypted into the clear); the full rule on usages
//!   no key may combine is [`key_roles`], checked at creation and on every
//!   change.
//! - CKA_TRUSTED (set by the SO only) is accepted on public keys and on
//!   secret keys with CKA_LOCAL and CKA_NEVER_EXTRACTABLE true
//!   ([`may_be_trusted`]); on any other key it is
//!   CKR_ATTRIBUTE_VALUE_INVALID.
//! - CKA_WRAP_WITH_TRUSTED only goes false → true; CKA_WRAP_TEMPLATE and
//!   CKA_UNWRAP_TEMPLATE (nested templates, one level deep) are fixed once
//!   the key exists.

use std::collections::BTreeMap;

use cryptoki_sys::*;
use mesign_proto::attr::{self, AttrKind};
use mesign_proto::{Attribute, AttributeValue};
use pci_driver_shim::command::{Curve, KeyPolicy, KeySpec, PublicKey, SecretUsage};

use crate::error::HsmError;

// Secret key templates; a child module so that it shares the helpers below.
#[path = "secret_keys.rs"]
pub mod secret_keys;
// The usages no key may combine (API attacks).
#[path = "key_roles.rs"]
pub mod key_roles;
// Templates of keys made by C_UnwrapKey.
#[path = "unwrap_templates.rs"]
pub mod unwrap_templates;

/// The policy the card binds into the blob of object `object_id`, read
/// from a key's usage flags; `secret` carries the secret-key-only usages
/// (`None` for a private key, whose policy encodes as before they existed).
fn key_policy(attrs: &AttrMap, spec: KeySpec, object_id: u64, secret: bool) -> KeyPolicy {
    let on = |ty| flag(attrs, ty) == Some(true);
    KeyPolicy {
        object_id,
        spec,
        sign: on(CKA_SIGN),
        decrypt: on(CKA_DECRYPT),
        unwrap: on(CKA_UNWRAP),
        derive: on(CKA_DERIVE),
        sensitive: on(CKA_SENSITIVE),
        extractable: on(CKA_EXTRACTABLE),
        secret: secret.then(|| SecretUsage {
            encrypt: on(CKA_ENCRYPT),
            verify: on(CKA_VERIFY),
            wrap: on(CKA_WRAP),
        }),
    }
}

/// Template shorthands shared by the attribute modules' unit tests.
#[cfg(test)]
mod test_support {
    use super::AttrMap;
    use crate::error::HsmError;
    use mesign_proto::attr;

    /// A template map from (type, value) pairs, unchecked.
    pub fn t(list: &[(u64, Vec<u8>)]) -> AttrMap {
        list.iter().cloned().collect()
    }

    pub fn u(v: u64) -> Vec<u8> {
        attr::ulong_value(v)
    }

    pub fn b(v: bool) -> Vec<u8> {
        attr::bool_value(v)
    }

    /// The CK_RV of an expected error.
    pub fn rv<T: std::fmt::Debug>(r: Result<T, HsmError>) -> u64 {
        r.expect_err("expected an error").rv()
    }
}

/// Attributes in wire form, by type.
pub type AttrMap = BTreeMap<u64, Vec<u8>>;

/// DER OIDs of the supported named curves, as CKA_EC_PARAMS carries them.
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const P521_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
/// CKA_EC_PARAMS naming Ed25519 (PKCS#11 3.0 §2.3.10): the OID 1.3.101.112
/// or the curve's name as a DER PrintableString (what pkcs11-tool and
/// SoftHSMv2 send).
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";

const COMMON: &[u64] = &[
    CKA_CLASS,
    CKA_UNIQUE_ID,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_LABEL,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
];
const DATA: &[u64] = &[CKA_APPLICATION, CKA_OBJECT_ID, CKA_VALUE];
const CERTIFICATE: &[u64] = &[
    CKA_CERTIFICATE_TYPE,
    CKA_TRUSTED,
    CKA_CERTIFICATE_CATEGORY,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_PUBLIC_KEY_INFO,
    CKA_SUBJECT,
    CKA_ID,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_VALUE,
    CKA_URL,
    CKA_HASH_OF_SUBJECT_PUBLIC_KEY,
    CKA_HASH_OF_ISSUER_PUBLIC_KEY,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_NAME_HASH_ALGORITHM,
    CKA_CHECK_VALUE,
];
const KEY: &[u64] = &[
    CKA_KEY_TYPE,
    CKA_ID,
    CKA_START_DATE,
    CKA_END_DATE,
    CKA_DERIVE,
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALLOWED_MECHANISMS,
];
const PUBLIC_KEY: &[u64] = &[
    CKA_SUBJECT,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_TRUSTED,
    CKA_PUBLIC_KEY_INFO,
    CKA_WRAP_TEMPLATE,
];
const PRIVATE_KEY: &[u64] = &[
    CKA_SUBJECT,
    CKA_SENSITIVE,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_PUBLIC_KEY_INFO,
    CKA_UNWRAP_TEMPLATE,
];
/// CKO_SECRET_KEY's own attributes (after [`KEY`]).
const SECRET_KEY: &[u64] = &[
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_VERIFY,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_CHECK_VALUE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_TRUSTED,
    CKA_VALUE,
    CKA_VALUE_LEN,
    CKA_WRAP_TEMPLATE,
    CKA_UNWRAP_TEMPLATE,
];
/// A secret key's value and what follows from it: never changed.
const SECRET_DERIVED: &[u64] = &[CKA_VALUE, CKA_VALUE_LEN, CKA_CHECK_VALUE];
const RSA_PUBLIC: &[u64] = &[CKA_MODULUS, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT];
const RSA_PRIVATE: &[u64] = &[CKA_MODULUS, CKA_PUBLIC_EXPONENT];
const EC_KEY: &[u64] = &[CKA_EC_PARAMS, CKA_EC_POINT];

/// The parts of a private key the daemon never has; they read as sensitive.
const PRIVATE_COMPONENTS: &[u64] = &[
    CKA_VALUE,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];

/// Attributes only the daemon sets, whatever the operation.
const COMPUTED: &[u64] = &[
    CKA_UNIQUE_ID,
    CKA_LOCAL,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_KEY_GEN_MECHANISM,
];

/// Attributes C_SetAttributeValue may never change.
const FIXED: &[u64] = &[
    CKA_CLASS,
    CKA_UNIQUE_ID,
    CKA_KEY_TYPE,
    CKA_CERTIFICATE_TYPE,
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_LOCAL,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_KEY_GEN_MECHANISM,
    CKA_MODULUS,
    CKA_MODULUS_BITS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
];

/// A certificate's value and what is derived from it.
const CERTIFICATE_DERIVED: &[u64] = &[
    CKA_VALUE,
    CKA_SUBJECT,
    CKA_ISSUER,
    CKA_SERIAL_NUMBER,
    CKA_CHECK_VALUE,
];

/// Usage flags bound into a card key's policy (the last three only exist on
/// secret keys among card keys).
const CARD_USAGE: &[u64] = &[
    CKA_SIGN,
    CKA_DECRYPT,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_WRAP,
];

/// Reads a template from the wire: checks each value's form and refuses
/// duplicates that disagree.
pub fn parse_template(template: &[Attribute]) -> Result<AttrMap, HsmError> {
    let mut map = AttrMap::new();
    for a in template {
        check_form(a.ty, &a.value)?;
        if let Some(previous) = map.insert(a.ty, a.value.clone()) {
            if previous != a.value {
                return Err(HsmError::TemplateInconsistent(a.ty));
            }
        }
    }
    Ok(map)
}

fn check_form(ty: u64, value: &[u8]) -> Result<(), HsmError> {
    let ok = match attr::kind(ty) {
        AttrKind::Bool => attr::read_bool(value).is_some(),
        AttrKind::Ulong => attr::read_ulong(value).is_some(),
        AttrKind::UlongArray => attr::read_ulong_array(value).is_some(),
        AttrKind::Date => {
            value.is_empty() || (value.len() == 8 && value.iter().all(u8::is_ascii_digit))
        }
        // A nested template: each attribute in its own form, no deeper
        // nesting.
        AttrKind::AttributeArray => attr::read_attribute_array(value).is_some_and(|inner| {
            inner.iter().all(|a| {
                attr::kind(a.ty) != AttrKind::AttributeArray && check_form(a.ty, &a.value).is_ok()
            })
        }),
        AttrKind::Bytes => true,
    };
    if ok {
        Ok(())
    } else {
        Err(HsmError::AttributeValueInvalid(ty))
    }
}

/// A boolean attribute, if present.
pub fn flag(map: &AttrMap, ty: u64) -> Option<bool> {
    map.get(&ty).and_then(|v| attr::read_bool(v))
}

/// A `CK_ULONG` attribute, if present.
pub fn ulong(map: &AttrMap, ty: u64) -> Option<u64> {
    map.get(&ty).and_then(|v| attr::read_ulong(v))
}

/// The allowed mechanisms, if the object restricts them.
pub fn allowed_mechanisms(map: &AttrMap) -> Option<Vec<u64>> {
    map.get(&CKA_ALLOWED_MECHANISMS)
        .and_then(|v| attr::read_ulong_array(v))
}

/// The attribute types an object of this class (and key type) may carry.
fn allowed_types(class: u64, key_type: Option<u64>) -> Vec<u64> {
    let mut types = COMMON.to_vec();
    match class {
        CKO_DATA => types.extend_from_slice(DATA),
        CKO_CERTIFICATE => types.extend_from_slice(CERTIFICATE),
        CKO_PUBLIC_KEY => {
            types.extend_from_slice(KEY);
            types.extend_from_slice(PUBLIC_KEY);
            match key_type {
                Some(CKK_RSA) => types.extend_from_slice(RSA_PUBLIC),
                Some(CKK_EC | CKK_EC_EDWARDS) => types.extend_from_slice(EC_KEY),
                _ => {}
            }
        }
        CKO_PRIVATE_KEY => {
            types.extend_from_slice(KEY);
            types.extend_from_slice(PRIVATE_KEY);
            match key_type {
                Some(CKK_RSA) => types.extend_from_slice(RSA_PRIVATE),
                Some(CKK_EC | CKK_EC_EDWARDS) => types.extend_from_slice(EC_KEY),
                _ => {}
            }
        }
        CKO_SECRET_KEY => {
            types.extend_from_slice(KEY);
            types.extend_from_slice(SECRET_KEY);
        }
        _ => {}
    }
    types
}

/// Refuses computed attributes (read-only) and types foreign to the class.
fn check_types(map: &AttrMap, allowed: &[u64], read_only: &[u64]) -> Result<(), HsmError> {
    for &ty in map.keys() {
        if COMPUTED.contains(&ty) || read_only.contains(&ty) {
            return Err(HsmError::AttributeReadOnly(ty));
        }
        if !allowed.contains(&ty) {
            return Err(HsmError::AttributeTypeInvalid(ty));
        }
    }
    Ok(())
}

fn require(map: &AttrMap, ty: u64) -> Result<&[u8], HsmError> {
    map.get(&ty)
        .map(Vec::as_slice)
        .ok_or(HsmError::TemplateIncomplete(ty))
}

fn default(map: &mut AttrMap, ty: u64, value: Vec<u8>) {
    map.entry(ty).or_insert(value);
}

fn default_bool(map: &mut AttrMap, ty: u64, value: bool) {
    default(map, ty, attr::bool_value(value));
}

fn storage_defaults(map: &mut AttrMap, private: bool) {
    default_bool(map, CKA_TOKEN, false);
    default_bool(map, CKA_PRIVATE, private);
    default_bool(map, CKA_MODIFIABLE, true);
    default_bool(map, CKA_COPYABLE, true);
    default_bool(map, CKA_DESTROYABLE, true);
    default(map, CKA_LABEL, Vec::new());
}

fn key_defaults(map: &mut AttrMap) {
    default(map, CKA_ID, Vec::new());
    default(map, CKA_START_DATE, Vec::new());
    default(map, CKA_END_DATE, Vec::new());
    default_bool(map, CKA_DERIVE, false);
    default(map, CKA_SUBJECT, Vec::new());
}

fn public_key_defaults(map: &mut AttrMap) {
    key_defaults(map);
    default_bool(map, CKA_ENCRYPT, false);
    default_bool(map, CKA_VERIFY, true);
    default_bool(map, CKA_VERIFY_RECOVER, false);
    default_bool(map, CKA_WRAP, false);
    default_bool(map, CKA_TRUSTED, false);
}

/// Validates a C_CreateObject template and fills in the defaults.
/// `so` says whether the creator is logged in as SO (only the SO may mark a
/// certificate or key trusted).
pub fn new_object(mut map: AttrMap, so: bool) -> Result<AttrMap, HsmError> {
    let class = ulong(&map, CKA_CLASS).ok_or(HsmError::TemplateIncomplete(CKA_CLASS))?;
    match class {
        CKO_DATA => {
            check_types(&map, &allowed_types(class, None), &[])?;
            default(&mut map, CKA_APPLICATION, Vec::new());
            default(&mut map, CKA_OBJECT_ID, Vec::new());
            default(&mut map, CKA_VALUE, Vec::new());
        }
        CKO_CERTIFICATE => {
            check_types(&map, &allowed_types(class, None), &[])?;
            let cert_type = ulong(&map, CKA_CERTIFICATE_TYPE)
                .ok_or(HsmError::TemplateIncomplete(CKA_CERTIFICATE_TYPE))?;
            if cert_type != CKC_X_509 {
                return Err(HsmError::AttributeValueInvalid(CKA_CERTIFICATE_TYPE));
            }
            require(&map, CKA_VALUE)?;
            crate::certificate::complete(&mut map)?;
            default(&mut map, CKA_ID, Vec::new());
            default(&mut map, CKA_CERTIFICATE_CATEGORY, attr::ulong_value(0));
            default_bool(&mut map, CKA_TRUSTED, false);
        }
        CKO_PUBLIC_KEY => {
            let key_type =
                ulong(&map, CKA_KEY_TYPE).ok_or(HsmError::TemplateIncomplete(CKA_KEY_TYPE))?;
            // MODULUS_BITS follows from the modulus on import.
            check_types(
                &map,
                &allowed_types(class, Some(key_type)),
                &[CKA_MODULUS_BITS],
            )?;
            match key_type {
                CKK_RSA => {
                    let modulus = require(&map, CKA_MODULUS)?;
                    let bits = bit_length(modulus);
                    if bits == 0 {
                        return Err(HsmError::AttributeValueInvalid(CKA_MODULUS));
                    }
                    if bit_length(require(&map, CKA_PUBLIC_EXPONENT)?) == 0 {
                        return Err(HsmError::AttributeValueInvalid(CKA_PUBLIC_EXPONENT));
                    }
                    map.insert(CKA_MODULUS_BITS, attr::ulong_value(bits));
                }
                CKK_EC_EDWARDS => {
                    ed25519_params(require(&map, CKA_EC_PARAMS)?)?;
                    let point = require(&map, CKA_EC_POINT)?;
                    let raw = ed25519_point(point)?;
                    map.insert(CKA_EC_POINT, ec_point_der(&raw));
                }
                CKK_EC => {
                    let curve = curve_of(require(&map, CKA_EC_PARAMS)?)?;
                    let point = require(&map, CKA_EC_POINT)?;
                    if point != ec_point_der(&raw_point(point, curve)?).as_slice() {
                        return Err(HsmError::AttributeValueInvalid(CKA_EC_POINT));
                    }
                }
                _ => return Err(HsmError::AttributeValueInvalid(CKA_KEY_TYPE)),
            }
            public_key_defaults(&mut map);
            default(
                &mut map,
                CKA_KEY_GEN_MECHANISM,
                attr::ulong_value(CK_UNAVAILABLE_INFORMATION),
            );
            map.insert(CKA_LOCAL, attr::bool_value(false));
        }
        CKO_PRIVATE_KEY | CKO_SECRET_KEY => return Err(HsmError::TemplateInconsistent(CKA_CLASS)),
        _ => return Err(HsmError::AttributeValueInvalid(CKA_CLASS)),
    }
    if flag(&map, CKA_TRUSTED) == Some(true) && !so {
        return Err(HsmError::AttributeReadOnly(CKA_TRUSTED));
    }
    storage_defaults(&mut map, false);
    Ok(map)
}

/// A checked C_GenerateKeyPair request, ready for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairPlan {
    pub mechanism: u64,
    pub spec: KeySpec,
    pub public: AttrMap,
    pub private: AttrMap,
    pub sign: bool,
    pub decrypt: bool,
    pub unwrap: bool,
    pub derive: bool,
    pub sensitive: bool,
    pub extractable: bool,
}

/// Validates the two templates of C_GenerateKeyPair and fills defaults.
pub fn key_pair_plan(
    mechanism: u64,
    mut public: AttrMap,
    mut private: AttrMap,
) -> Result<KeyPairPlan, HsmError> {
    let key_type = match mechanism {
        CKM_RSA_PKCS_KEY_PAIR_GEN => CKK_RSA,
        CKM_EC_KEY_PAIR_GEN => CKK_EC,
        CKM_EC_EDWARDS_KEY_PAIR_GEN => CKK_EC_EDWARDS,
        other => return Err(HsmError::MechanismInvalid(other)),
    };
    for (map, class) in [(&public, CKO_PUBLIC_KEY), (&private, CKO_PRIVATE_KEY)] {
        if ulong(map, CKA_CLASS).is_some_and(|c| c != class) {
            return Err(HsmError::TemplateInconsistent(CKA_CLASS));
        }
        if ulong(map, CKA_KEY_TYPE).is_some_and(|k| k != key_type) {
            return Err(HsmError::TemplateInconsistent(CKA_KEY_TYPE));
        }
    }
    let (public_read_only, private_read_only): (&[u64], &[u64]) = if key_type == CKK_RSA {
        (&[CKA_MODULUS], &[CKA_MODULUS, CKA_PUBLIC_EXPONENT])
    } else {
        (&[CKA_EC_POINT], &[CKA_EC_PARAMS, CKA_EC_POINT])
    };
    check_types(
        &public,
        &allowed_types(CKO_PUBLIC_KEY, Some(key_type)),
        public_read_only,
    )?;
    check_types(
        &private,
        &allowed_types(CKO_PRIVATE_KEY, Some(key_type)),
        private_read_only,
    )?;

    let spec = if key_type == CKK_RSA {
        let bits = ulong(&public, CKA_MODULUS_BITS)
            .ok_or(HsmError::TemplateIncomplete(CKA_MODULUS_BITS))?;
        if !matches!(bits, 2048 | 3072 | 4096) {
            return Err(HsmError::KeySizeRange(bits));
        }
        if let Some(e) = public.get(&CKA_PUBLIC_EXPONENT) {
            if strip_zeros(e) != [1, 0, 1] {
                return Err(HsmError::AttributeValueInvalid(CKA_PUBLIC_EXPONENT));
            }
        }
        KeySpec::Rsa { bits: bits as u32 }
    } else if key_type == CKK_EC_EDWARDS {
        ed25519_params(require(&public, CKA_EC_PARAMS)?)?;
        KeySpec::Ed25519
    } else {
        KeySpec::Ec(curve_of(require(&public, CKA_EC_PARAMS)?)?)
    };

    if flag(&public, CKA_TRUSTED) == Some(true) {
        // Only the SO may mark keys trusted, and the SO does not generate.
        return Err(HsmError::AttributeReadOnly(CKA_TRUSTED));
    }
    let sign = flag(&private, CKA_SIGN).unwrap_or(true);
    let decrypt = flag(&private, CKA_DECRYPT).unwrap_or(false);
    let unwrap = flag(&private, CKA_UNWRAP).unwrap_or(false);
    let derive = flag(&private, CKA_DERIVE).unwrap_or(false);
    let sensitive = flag(&private, CKA_SENSITIVE).unwrap_or(true);
    let extractable = flag(&private, CKA_EXTRACTABLE).unwrap_or(false);
    // Covers decrypt with unwrap on the private key too.
    key_roles::check_pair(&public, &private)?;

    for (map, class) in [
        (&mut public, CKO_PUBLIC_KEY),
        (&mut private, CKO_PRIVATE_KEY),
    ] {
        map.insert(CKA_CLASS, attr::ulong_value(class));
        map.insert(CKA_KEY_TYPE, attr::ulong_value(key_type));
        map.insert(CKA_LOCAL, attr::bool_value(true));
        map.insert(CKA_KEY_GEN_MECHANISM, attr::ulong_value(mechanism));
    }
    public_key_defaults(&mut public);
    storage_defaults(&mut public, false);

    key_defaults(&mut private);
    for (ty, value) in [
        (CKA_SIGN, sign),
        (CKA_DECRYPT, decrypt),
        (CKA_UNWRAP, unwrap),
        (CKA_DERIVE, derive),
        (CKA_SENSITIVE, sensitive),
        (CKA_EXTRACTABLE, extractable),
        (CKA_ALWAYS_SENSITIVE, sensitive),
        (CKA_NEVER_EXTRACTABLE, !extractable),
    ] {
        private.insert(ty, attr::bool_value(value));
    }
    default_bool(&mut private, CKA_SIGN_RECOVER, false);
    default_bool(&mut private, CKA_WRAP_WITH_TRUSTED, false);
    default_bool(&mut private, CKA_ALWAYS_AUTHENTICATE, false);
    storage_defaults(&mut private, true);

    Ok(KeyPairPlan {
        mechanism,
        spec,
        public,
        private,
        sign,
        decrypt,
        unwrap,
        derive,
        sensitive,
        extractable,
    })
}

/// Adds the key material the card returned to both halves of a new pair.
pub fn add_public_key(plan: &mut KeyPairPlan, key: &PublicKey) -> Result<(), HsmError> {
    match (key, plan.spec) {
        (PublicKey::Rsa { modulus, exponent }, KeySpec::Rsa { .. }) => {
            for map in [&mut plan.public, &mut plan.private] {
                map.insert(CKA_MODULUS, modulus.clone());
                map.insert(CKA_PUBLIC_EXPONENT, exponent.clone());
            }
            plan.public
                .insert(CKA_MODULUS_BITS, attr::ulong_value(bit_length(modulus)));
        }
        (PublicKey::Ec { curve, point }, KeySpec::Ec(asked)) if *curve == asked => {
            let point = ec_point_der(point);
            for map in [&mut plan.public, &mut plan.private] {
                map.insert(CKA_EC_PARAMS, curve_oid(*curve).to_vec());
                map.insert(CKA_EC_POINT, point.clone());
            }
        }
        (PublicKey::Ed25519 { point }, KeySpec::Ed25519) if point.len() == 32 => {
            // Both halves name the curve as pkcs11-tool does, whichever
            // form the template used (SoftHSMv2 does the same).
            let point = ec_point_der(point);
            for map in [&mut plan.public, &mut plan.private] {
                map.insert(CKA_EC_PARAMS, ED25519_NAME.to_vec());
                map.insert(CKA_EC_POINT, point.clone());
            }
        }
        _ => {
            return Err(HsmError::Card(crate::card::CardFailure::UnexpectedResponse));
        }
    }
    Ok(())
}

/// Applies a C_SetAttributeValue template to a copy of `current`.
/// `card_key` says whether the object is a card-held private key.
pub fn set_attributes(
    current: &AttrMap,
    changes: &AttrMap,
    card_key: bool,
    so: bool,
) -> Result<AttrMap, HsmError> {
    if flag(current, CKA_MODIFIABLE) == Some(false) {
        return Err(HsmError::ActionProhibited(CKA_MODIFIABLE));
    }
    let mut next = current.clone();
    for (&ty, value) in changes {
        check_change(current, ty, value, card_key, so, FIXED)?;
        next.insert(ty, value.clone());
    }
    // No change may bring conflicting roles together (a key stored before
    // the rule keeps working for everything but wrapping).
    if key_roles::check(current).is_ok() {
        key_roles::check(&next)?;
    }
    Ok(next)
}

/// Applies a C_CopyObject template to a copy of `current`. Copying may
/// change CKA_TOKEN, CKA_PRIVATE and CKA_MODIFIABLE (the latter only to
/// false), and whatever C_SetAttributeValue could change.
pub fn copy_attributes(
    current: &AttrMap,
    changes: &AttrMap,
    so: bool,
) -> Result<AttrMap, HsmError> {
    if flag(current, CKA_COPYABLE) == Some(false) {
        return Err(HsmError::ActionProhibited(CKA_COPYABLE));
    }
    let fixed: Vec<u64> = FIXED
        .iter()
        .copied()
        .filter(|t| ![CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE].contains(t))
        .collect();
    let mut next = current.clone();
    for (&ty, value) in changes {
        if ty == CKA_MODIFIABLE
            && attr::read_bool(value) == Some(true)
            && flag(current, ty) == Some(false)
        {
            return Err(HsmError::AttributeReadOnly(ty));
        }
        check_change(current, ty, value, false, so, &fixed)?;
        next.insert(ty, value.clone());
    }
    Ok(next)
}

fn check_change(
    current: &AttrMap,
    ty: u64,
    value: &[u8],
    card_key: bool,
    so: bool,
    fixed: &[u64],
) -> Result<(), HsmError> {
    let class = ulong(current, CKA_CLASS).unwrap_or(CKO_DATA);
    let key_type = ulong(current, CKA_KEY_TYPE);
    if !allowed_types(class, key_type).contains(&ty) {
        return Err(HsmError::AttributeTypeInvalid(ty));
    }
    let unchanged = current.get(&ty).is_some_and(|v| v.as_slice() == value);
    if unchanged {
        // Restating a value is not a change; tools do it routinely.
        return Ok(());
    }
    if fixed.contains(&ty)
        || (class == CKO_CERTIFICATE && CERTIFICATE_DERIVED.contains(&ty))
        || (class == CKO_SECRET_KEY && SECRET_DERIVED.contains(&ty))
    {
        return Err(HsmError::AttributeReadOnly(ty));
    }
    if card_key && CARD_USAGE.contains(&ty) {
        return Err(HsmError::AttributeReadOnly(ty));
    }
    let new = attr::read_bool(value);
    match ty {
        // Sensitivity and extractability only ever tighten.
        CKA_SENSITIVE if new != Some(true) => Err(HsmError::AttributeReadOnly(ty)),
        CKA_EXTRACTABLE if new != Some(false) => Err(HsmError::AttributeReadOnly(ty)),
        CKA_COPYABLE if new != Some(false) => Err(HsmError::AttributeReadOnly(ty)),
        CKA_TRUSTED if !so => Err(HsmError::AttributeReadOnly(ty)),
        CKA_TRUSTED if new == Some(true) && !may_be_trusted(current) => {
            Err(HsmError::AttributeValueInvalid(ty))
        }
        CKA_ALWAYS_AUTHENTICATE if new != Some(true) => Err(HsmError::AttributeReadOnly(ty)),
        // Once set, a key keeps needing a trusted wrapping key (PKCS#11
        // 3.0 §4.9); and the templates that bound what wrapping and
        // unwrapping may do stay as the key was made.
        CKA_WRAP_WITH_TRUSTED if new != Some(true) => Err(HsmError::AttributeReadOnly(ty)),
        CKA_WRAP_TEMPLATE | CKA_UNWRAP_TEMPLATE => Err(HsmError::AttributeReadOnly(ty)),
        _ => Ok(()),
    }
}

/// True if the SO may mark this key CKA_TRUSTED: a public key (its value
/// is no secret), or a secret key generated on the card that was never
/// extractable. A trusted key is what CKA_WRAP_WITH_TRUSTED keys may leave
/// under, so a key whose value someone knows (imported, unwrapped,
/// derived) or could learn (extractable) must not be one. Certificates'
/// CKA_TRUSTED says something else and is not limited here.
pub fn may_be_trusted(key: &AttrMap) -> bool {
    match ulong(key, CKA_CLASS) {
        Some(CKO_PUBLIC_KEY | CKO_CERTIFICATE) => true,
        Some(CKO_SECRET_KEY) => {
            flag(key, CKA_LOCAL) == Some(true) && flag(key, CKA_NEVER_EXTRACTABLE) == Some(true)
        }
        _ => false,
    }
}

/// Answers C_GetAttributeValue for one attribute type.
pub fn read(map: &AttrMap, ty: u64) -> AttributeValue {
    let private_key = ulong(map, CKA_CLASS) == Some(CKO_PRIVATE_KEY);
    // The daemon has no secret key's value (see `secret_keys`).
    if ulong(map, CKA_CLASS) == Some(CKO_SECRET_KEY) && ty == CKA_VALUE {
        return AttributeValue::Sensitive;
    }
    if private_key && PRIVATE_COMPONENTS.contains(&ty) {
        let hidden =
            flag(map, CKA_SENSITIVE) != Some(false) || flag(map, CKA_EXTRACTABLE) != Some(true);
        return if hidden {
            AttributeValue::Sensitive
        } else {
            AttributeValue::Invalid
        };
    }
    match map.get(&ty) {
        Some(v) => AttributeValue::Value(v.clone()),
        None => AttributeValue::Invalid,
    }
}

/// True if `object` has every attribute of `template` with an equal value.
pub fn matches(object: &AttrMap, template: &AttrMap) -> bool {
    template
        .iter()
        .all(|(ty, value)| object.get(ty) == Some(value))
}

/// The wire list of a map (for storing).
pub fn to_list(map: &AttrMap) -> Vec<Attribute> {
    map.iter()
        .map(|(&ty, value)| Attribute {
            ty,
            value: value.clone(),
        })
        .collect()
}

/// The map of a stored list.
pub fn from_list(list: &[Attribute]) -> AttrMap {
    list.iter().map(|a| (a.ty, a.value.clone())).collect()
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[first..]
}

fn bit_length(big_endian: &[u8]) -> u64 {
    let v = strip_zeros(big_endian);
    match v.first() {
        Some(&b) => (v.len() as u64 - 1) * 8 + u64::from(8 - b.leading_zeros()),
        None => 0,
    }
}

/// The curve named by a DER OID in CKA_EC_PARAMS.
pub fn curve_of(params: &[u8]) -> Result<Curve, HsmError> {
    match params {
        p if p == P256_OID => Ok(Curve::P256),
        p if p == P384_OID => Ok(Curve::P384),
        p if p == P521_OID => Ok(Curve::P521),
        _ => Err(HsmError::CurveNotSupported),
    }
}

/// Checks that CKA_EC_PARAMS names Ed25519 (Ed448 is not offered).
pub fn ed25519_params(params: &[u8]) -> Result<(), HsmError> {
    if params == ED25519_OID || params == ED25519_NAME {
        Ok(())
    } else {
        Err(HsmError::CurveNotSupported)
    }
}

/// The 32-byte Ed25519 point of an imported CKA_EC_POINT: a DER OCTET
/// STRING around it, or (as PKCS#11 3.0's text reads) the bare bytes.
fn ed25519_point(value: &[u8]) -> Result<Vec<u8>, HsmError> {
    match value {
        [0x04, 0x20, point @ ..] if point.len() == 32 => Ok(point.to_vec()),
        point if point.len() == 32 => Ok(point.to_vec()),
        _ => Err(HsmError::AttributeValueInvalid(CKA_EC_POINT)),
    }
}

fn curve_oid(curve: Curve) -> &'static [u8] {
    match curve {
        Curve::P256 => P256_OID,
        Curve::P384 => P384_OID,
        Curve::P521 => P521_OID,
    }
}

/// CKA_EC_POINT as PKCS#11 2.40 specifies it: a DER OCTET STRING around the
/// uncompressed point.
pub fn ec_point_der(point: &[u8]) -> Vec<u8> {
    let mut der = vec![0x04];
    match point.len() {
        n if n < 0x80 => der.push(n as u8),
        n if n < 0x100 => der.extend_from_slice(&[0x81, n as u8]),
        n => der.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    der.extend_from_slice(point);
    der
}

/// The uncompressed point inside a DER CKA_EC_POINT for `curve`.
fn raw_point(der: &[u8], curve: Curve) -> Result<Vec<u8>, HsmError> {
    let len = 1 + 2 * curve.scalar_len();
    let point = der.get(der.len().saturating_sub(len)..).unwrap_or_default();
    if point.len() != len || point[0] != 0x04 {
        return Err(HsmError::AttributeValueInvalid(CKA_EC_POINT));
    }
    Ok(point.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(list: &[(u64, Vec<u8>)]) -> AttrMap {
        parse_template(
            &list
                .iter()
                .map(|(ty, v)| Attribute {
                    ty: *ty,
                    value: v.clone(),
                })
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }
    use super::test_support::{b, rv, u};
    const CERT: &[u8] = include_bytes!("../../softhsm-tests/testdata/cert-p256.der");

    #[test]
    fn wrong_value_forms_and_conflicting_duplicates_are_refused() {
        let bad_bool = [Attribute {
            ty: CKA_TOKEN,
            value: vec![1, 1],
        }];
        assert_eq!(rv(parse_template(&bad_bool)), CKR_ATTRIBUTE_VALUE_INVALID);
        let bad_ulong = [Attribute {
            ty: CKA_CLASS,
            value: vec![1],
        }];
        assert_eq!(rv(parse_template(&bad_ulong)), CKR_ATTRIBUTE_VALUE_INVALID);
        let bad_date = [Attribute {
            ty: CKA_START_DATE,
            value: b"2024-1-1".to_vec(),
        }];
        assert_eq!(rv(parse_template(&bad_date)), CKR_ATTRIBUTE_VALUE_INVALID);
        let dup = [
            Attribute {
                ty: CKA_LABEL,
                value: b"a".to_vec(),
            },
            Attribute {
                ty: CKA_LABEL,
                value: b"b".to_vec(),
            },
        ];
        assert_eq!(rv(parse_template(&dup)), CKR_TEMPLATE_INCONSISTENT);
        let same = [
            Attribute {
                ty: CKA_LABEL,
                value: b"a".to_vec(),
            },
            Attribute {
                ty: CKA_LABEL,
                value: b"a".to_vec(),
            },
        ];
        assert_eq!(parse_template(&same).unwrap().len(), 1);
    }

    #[test]
    fn data_object_gets_defaults() {
        let m = new_object(
            t(&[(CKA_CLASS, u(CKO_DATA)), (CKA_VALUE, b"x".to_vec())]),
            false,
        )
        .unwrap();
        assert_eq!(flag(&m, CKA_TOKEN), Some(false));
        assert_eq!(flag(&m, CKA_PRIVATE), Some(false));
        assert_eq!(flag(&m, CKA_MODIFIABLE), Some(true));
        assert_eq!(flag(&m, CKA_DESTROYABLE), Some(true));
        assert_eq!(m.get(&CKA_LABEL), Some(&Vec::new()));
        assert_eq!(m.get(&CKA_VALUE), Some(&b"x".to_vec()));
    }

    #[test]
    fn create_checks_class_required_types_and_computed_attributes() {
        assert_eq!(
            rv(new_object(t(&[(CKA_LABEL, b"x".to_vec())]), false)),
            CKR_TEMPLATE_INCOMPLETE
        );
        assert_eq!(
            rv(new_object(t(&[(CKA_CLASS, u(CKO_PRIVATE_KEY))]), false)),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            rv(new_object(t(&[(CKA_CLASS, u(CKO_SECRET_KEY))]), false)),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            rv(new_object(t(&[(CKA_CLASS, u(0x777))]), false)),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let data_with_modulus = t(&[(CKA_CLASS, u(CKO_DATA)), (CKA_MODULUS, vec![1])]);
        assert_eq!(
            rv(new_object(data_with_modulus, false)),
            CKR_ATTRIBUTE_TYPE_INVALID
        );
        let cert = t(&[
            (CKA_CLASS, u(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_TYPE, u(CKC_X_509)),
        ]);
        assert_eq!(rv(new_object(cert.clone(), false)), CKR_TEMPLATE_INCOMPLETE);
        let mut junk = cert.clone();
        junk.insert(CKA_VALUE, vec![0x30, 0]);
        assert_eq!(rv(new_object(junk, false)), CKR_ATTRIBUTE_VALUE_INVALID);
        let mut full = cert;
        full.insert(CKA_VALUE, CERT.to_vec());
        let stored = new_object(full.clone(), false).unwrap();
        let subject = stored[&CKA_SUBJECT].clone();
        assert_eq!(subject[0], 0x30, "CKA_SUBJECT filled from the certificate");
        let mut other_subject = full.clone();
        other_subject.insert(CKA_SUBJECT, vec![0x30, 0]);
        assert_eq!(
            rv(new_object(other_subject, false)),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            rv(set_attributes(
                &stored,
                &t(&[(CKA_ISSUER, vec![0x30, 0])]),
                false,
                false
            )),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert!(set_attributes(&stored, &t(&[(CKA_SUBJECT, subject)]), false, false).is_ok());
        full.insert(CKA_TRUSTED, b(true));
        assert_eq!(rv(new_object(full.clone(), false)), CKR_ATTRIBUTE_READ_ONLY);
        assert!(new_object(full, true).is_ok());
        let local = t(&[(CKA_CLASS, u(CKO_DATA)), (CKA_LOCAL, b(true))]);
        assert_eq!(rv(new_object(local, false)), CKR_ATTRIBUTE_READ_ONLY);
    }

    #[test]
    fn public_keys_are_validated_on_import() {
        let rsa = t(&[
            (CKA_CLASS, u(CKO_PUBLIC_KEY)),
            (CKA_KEY_TYPE, u(CKK_RSA)),
            (CKA_MODULUS, vec![0, 0x80, 0, 0]),
            (CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
        ]);
        let m = new_object(rsa.clone(), false).unwrap();
        assert_eq!(ulong(&m, CKA_MODULUS_BITS), Some(24));
        assert_eq!(flag(&m, CKA_LOCAL), Some(false));
        assert_eq!(flag(&m, CKA_VERIFY), Some(true));
        let mut with_bits = rsa.clone();
        with_bits.insert(CKA_MODULUS_BITS, u(24));
        assert_eq!(rv(new_object(with_bits, false)), CKR_ATTRIBUTE_READ_ONLY);
        let mut no_exp = rsa;
        no_exp.remove(&CKA_PUBLIC_EXPONENT);
        assert_eq!(rv(new_object(no_exp, false)), CKR_TEMPLATE_INCOMPLETE);

        let point = ec_point_der(&[&[4u8][..], &[9; 64]].concat());
        let ec = t(&[
            (CKA_CLASS, u(CKO_PUBLIC_KEY)),
            (CKA_KEY_TYPE, u(CKK_EC)),
            (CKA_EC_PARAMS, P256_OID.to_vec()),
            (CKA_EC_POINT, point),
        ]);
        assert!(new_object(ec.clone(), false).is_ok());
        let mut short = ec.clone();
        short.insert(CKA_EC_POINT, vec![4, 3, 4, 1, 2]);
        assert_eq!(rv(new_object(short, false)), CKR_ATTRIBUTE_VALUE_INVALID);
        let mut other_curve = ec;
        other_curve.insert(CKA_EC_PARAMS, vec![6, 3, 1, 2, 3]);
        assert_eq!(rv(new_object(other_curve, false)), CKR_CURVE_NOT_SUPPORTED);
    }

    #[test]
    fn key_pair_plan_checks_sizes_curves_and_defaults() {
        let plan = key_pair_plan(
            CKM_EC_KEY_PAIR_GEN,
            t(&[(CKA_EC_PARAMS, P384_OID.to_vec()), (CKA_TOKEN, b(true))]),
            t(&[(CKA_LABEL, b"k".to_vec())]),
        )
        .unwrap();
        assert_eq!(plan.spec, KeySpec::Ec(Curve::P384));
        assert!(plan.sign && plan.sensitive && !plan.extractable && !plan.decrypt);
        assert_eq!(flag(&plan.private, CKA_PRIVATE), Some(true));
        assert_eq!(flag(&plan.public, CKA_PRIVATE), Some(false));
        assert_eq!(flag(&plan.private, CKA_NEVER_EXTRACTABLE), Some(true));
        assert_eq!(flag(&plan.private, CKA_LOCAL), Some(true));
        assert_eq!(
            ulong(&plan.private, CKA_KEY_GEN_MECHANISM),
            Some(CKM_EC_KEY_PAIR_GEN)
        );

        let rsa = |bits: u64| {
            key_pair_plan(
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                t(&[(CKA_MODULUS_BITS, u(bits))]),
                AttrMap::new(),
            )
        };
        assert_eq!(rsa(3072).unwrap().spec, KeySpec::Rsa { bits: 3072 });
        assert_eq!(rv(rsa(1024)), CKR_KEY_SIZE_RANGE);
        assert_eq!(
            rv(key_pair_plan(
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                AttrMap::new(),
                AttrMap::new()
            )),
            CKR_TEMPLATE_INCOMPLETE
        );
        let e3 = t(&[(CKA_MODULUS_BITS, u(2048)), (CKA_PUBLIC_EXPONENT, vec![3])]);
        assert_eq!(
            rv(key_pair_plan(CKM_RSA_PKCS_KEY_PAIR_GEN, e3, AttrMap::new())),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let e_padded = t(&[
            (CKA_MODULUS_BITS, u(2048)),
            (CKA_PUBLIC_EXPONENT, vec![0, 1, 0, 1]),
        ]);
        assert!(key_pair_plan(CKM_RSA_PKCS_KEY_PAIR_GEN, e_padded, AttrMap::new()).is_ok());
        let bad_curve = t(&[(CKA_EC_PARAMS, b"prime256v1".to_vec())]);
        assert_eq!(
            rv(key_pair_plan(
                CKM_EC_KEY_PAIR_GEN,
                bad_curve,
                AttrMap::new()
            )),
            CKR_CURVE_NOT_SUPPORTED
        );
        let p256 = || t(&[(CKA_EC_PARAMS, P256_OID.to_vec())]);
        let wrong_type = t(&[(CKA_KEY_TYPE, u(CKK_RSA))]);
        assert_eq!(
            rv(key_pair_plan(CKM_EC_KEY_PAIR_GEN, p256(), wrong_type)),
            CKR_TEMPLATE_INCONSISTENT
        );
        let both = t(&[(CKA_DECRYPT, b(true)), (CKA_UNWRAP, b(true))]);
        assert_eq!(
            rv(key_pair_plan(CKM_EC_KEY_PAIR_GEN, p256(), both)),
            CKR_TEMPLATE_INCONSISTENT
        );
        let local = t(&[(CKA_LOCAL, b(true))]);
        assert_eq!(
            rv(key_pair_plan(CKM_EC_KEY_PAIR_GEN, p256(), local)),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            rv(key_pair_plan(CKM_SHA256, p256(), AttrMap::new())),
            CKR_MECHANISM_INVALID
        );
    }

    #[test]
    fn ed25519_pairs_accept_the_name_or_the_oid_and_store_the_name() {
        for params in [ED25519_NAME, ED25519_OID] {
            let mut plan = key_pair_plan(
                CKM_EC_EDWARDS_KEY_PAIR_GEN,
                t(&[(CKA_EC_PARAMS, params.to_vec())]),
                t(&[]),
            )
            .unwrap();
            assert_eq!(plan.spec, KeySpec::Ed25519);
            add_public_key(&mut plan, &PublicKey::Ed25519 { point: vec![9; 32] }).unwrap();
            let mut der = vec![0x04, 0x20];
            der.extend_from_slice(&[9; 32]);
            for half in [&plan.public, &plan.private] {
                assert_eq!(half.get(&CKA_EC_PARAMS).unwrap(), ED25519_NAME);
                assert_eq!(half.get(&CKA_EC_POINT), Some(&der));
                assert_eq!(ulong(half, CKA_KEY_TYPE), Some(CKK_EC_EDWARDS));
            }
        }
        let ed448 = t(&[(CKA_EC_PARAMS, b"\x13\x0aedwards448".to_vec())]);
        assert_eq!(
            rv(key_pair_plan(CKM_EC_EDWARDS_KEY_PAIR_GEN, ed448, t(&[]))),
            CKR_CURVE_NOT_SUPPORTED
        );
        // A P-256 curve is no Edwards curve, and the other way round.
        let p256 = t(&[(CKA_EC_PARAMS, P256_OID.to_vec())]);
        assert_eq!(
            rv(key_pair_plan(CKM_EC_EDWARDS_KEY_PAIR_GEN, p256, t(&[]))),
            CKR_CURVE_NOT_SUPPORTED
        );
        let ed = t(&[(CKA_EC_PARAMS, ED25519_NAME.to_vec())]);
        assert_eq!(
            rv(key_pair_plan(CKM_EC_KEY_PAIR_GEN, ed, t(&[]))),
            CKR_CURVE_NOT_SUPPORTED
        );
        // Imported public keys: DER or bare point, stored as DER.
        for point in [[&[0x04, 0x20][..], &[5; 32]].concat(), vec![5; 32]] {
            let key = new_object(
                t(&[
                    (CKA_CLASS, u(CKO_PUBLIC_KEY)),
                    (CKA_KEY_TYPE, u(CKK_EC_EDWARDS)),
                    (CKA_EC_PARAMS, ED25519_OID.to_vec()),
                    (CKA_EC_POINT, point),
                ]),
                false,
            )
            .unwrap();
            assert_eq!(key.get(&CKA_EC_POINT).unwrap().len(), 34);
        }
        let short = t(&[
            (CKA_CLASS, u(CKO_PUBLIC_KEY)),
            (CKA_KEY_TYPE, u(CKK_EC_EDWARDS)),
            (CKA_EC_PARAMS, ED25519_NAME.to_vec()),
            (CKA_EC_POINT, vec![0x04, 0x1f, 1]),
        ]);
        assert_eq!(rv(new_object(short, false)), CKR_ATTRIBUTE_VALUE_INVALID);
    }

    #[test]
    fn public_key_material_lands_on_both_halves() {
        let mut plan = key_pair_plan(
            CKM_EC_KEY_PAIR_GEN,
            t(&[(CKA_EC_PARAMS, P256_OID.to_vec())]),
            AttrMap::new(),
        )
        .unwrap();
        let point = [&[4u8][..], &[1; 64]].concat();
        add_public_key(
            &mut plan,
            &PublicKey::Ec {
                curve: Curve::P256,
                point: point.clone(),
            },
        )
        .unwrap();
        let der = plan.public.get(&CKA_EC_POINT).unwrap();
        assert_eq!(&der[..2], &[0x04, 65]);
        assert_eq!(&der[2..], point.as_slice());
        assert_eq!(plan.private.get(&CKA_EC_POINT), Some(der));
        let wrong = PublicKey::Ec {
            curve: Curve::P521,
            point,
        };
        assert!(add_public_key(&mut plan, &wrong).is_err());
        assert_eq!(ec_point_der(&[7; 133])[..3], [0x04, 0x81, 133]);
    }

    #[test]
    fn set_attribute_rules() {
        let plan = key_pair_plan(
            CKM_EC_KEY_PAIR_GEN,
            t(&[(CKA_EC_PARAMS, P256_OID.to_vec())]),
            AttrMap::new(),
        )
        .unwrap();
        let key = plan.private;
        let set = |changes: &[(u64, Vec<u8>)]| set_attributes(&key, &t(changes), true, false);
        assert!(set(&[(CKA_LABEL, b"new".to_vec()), (CKA_ID, vec![1])]).is_ok());
        assert_eq!(rv(set(&[(CKA_SIGN, b(false))])), CKR_ATTRIBUTE_READ_ONLY);
        assert!(
            set(&[(CKA_SIGN, b(true))]).is_ok(),
            "restating a value is allowed"
        );
        assert_eq!(
            rv(set(&[(CKA_SENSITIVE, b(false))])),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            rv(set(&[(CKA_EXTRACTABLE, b(true))])),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            rv(set(&[(CKA_CLASS, u(CKO_DATA))])),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            rv(set(&[(CKA_EC_PARAMS, P384_OID.to_vec())])),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            rv(set(&[(CKA_APPLICATION, b"x".to_vec())])),
            CKR_ATTRIBUTE_TYPE_INVALID
        );

        let mut exportable = key.clone();
        exportable.insert(CKA_SENSITIVE, b(false));
        exportable.insert(CKA_EXTRACTABLE, b(true));
        let tightened = set_attributes(
            &exportable,
            &t(&[(CKA_SENSITIVE, b(true)), (CKA_EXTRACTABLE, b(false))]),
            true,
            false,
        )
        .unwrap();
        assert_eq!(flag(&tightened, CKA_SENSITIVE), Some(true));
        assert_eq!(flag(&tightened, CKA_ALWAYS_SENSITIVE), Some(true));

        let always = set(&[(CKA_ALWAYS_AUTHENTICATE, b(true))]).unwrap();
        let loosen = set_attributes(
            &always,
            &t(&[(CKA_ALWAYS_AUTHENTICATE, b(false))]),
            true,
            false,
        );
        assert_eq!(rv(loosen), CKR_ATTRIBUTE_READ_ONLY);

        let mut frozen = key.clone();
        frozen.insert(CKA_MODIFIABLE, b(false));
        let r = set_attributes(&frozen, &t(&[(CKA_LABEL, b"x".to_vec())]), true, false);
        assert_eq!(rv(r), CKR_ACTION_PROHIBITED);
    }

    #[test]
    fn only_local_never_extractable_secret_keys_and_public_keys_may_be_trusted() {
        let trust =
            |key: &AttrMap, so| set_attributes(key, &t(&[(CKA_TRUSTED, b(true))]), true, so);
        let generated = |extractable| {
            secret_keys::generate_plan(
                CKM_AES_KEY_GEN,
                t(&[(CKA_VALUE_LEN, u(32)), (CKA_EXTRACTABLE, b(extractable))]),
            )
            .unwrap()
            .attrs
        };
        let sealed = generated(false);
        assert_eq!(rv(trust(&sealed, false)), CKR_ATTRIBUTE_READ_ONLY);
        let trusted = trust(&sealed, true).unwrap();
        assert_eq!(flag(&trusted, CKA_TRUSTED), Some(true));
        assert_eq!(
            rv(trust(&generated(true), true)),
            CKR_ATTRIBUTE_VALUE_INVALID,
            "an extractable key"
        );
        // Made extractable once, tightened later: still not trusted.
        let tightened = set_attributes(
            &generated(true),
            &t(&[(CKA_EXTRACTABLE, b(false))]),
            true,
            false,
        )
        .unwrap();
        assert_eq!(rv(trust(&tightened, true)), CKR_ATTRIBUTE_VALUE_INVALID);
        let (imported, _) = secret_keys::import_plan(t(&[
            (CKA_CLASS, u(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, u(CKK_AES)),
            (CKA_VALUE, vec![1; 16]),
        ]))
        .unwrap();
        assert_eq!(
            rv(trust(&imported.attrs, true)),
            CKR_ATTRIBUTE_VALUE_INVALID,
            "a key of known value"
        );
        let public = new_object(
            t(&[
                (CKA_CLASS, u(CKO_PUBLIC_KEY)),
                (CKA_KEY_TYPE, u(CKK_RSA)),
                (CKA_MODULUS, vec![0xc5; 256]),
                (CKA_PUBLIC_EXPONENT, vec![1, 0, 1]),
                (CKA_WRAP, b(true)),
            ]),
            false,
        )
        .unwrap();
        assert!(set_attributes(&public, &t(&[(CKA_TRUSTED, b(true))]), false, true).is_ok());
        assert!(may_be_trusted(&public) && may_be_trusted(&sealed));
        assert!(!may_be_trusted(&imported.attrs));
    }

    #[test]
    fn copy_may_change_token_and_private_but_not_revive_modifiable() {
        let data = new_object(t(&[(CKA_CLASS, u(CKO_DATA))]), false).unwrap();
        let copy = copy_attributes(
            &data,
            &t(&[(CKA_TOKEN, b(true)), (CKA_PRIVATE, b(true))]),
            false,
        )
        .unwrap();
        assert_eq!(flag(&copy, CKA_TOKEN), Some(true));
        let frozen = copy_attributes(&data, &t(&[(CKA_MODIFIABLE, b(false))]), false).unwrap();
        assert_eq!(
            rv(copy_attributes(
                &frozen,
                &t(&[(CKA_MODIFIABLE, b(true))]),
                false
            )),
            CKR_ATTRIBUTE_READ_ONLY
        );
        let mut uncopyable = data;
        uncopyable.insert(CKA_COPYABLE, b(false));
        assert_eq!(
            rv(copy_attributes(&uncopyable, &AttrMap::new(), false)),
            CKR_ACTION_PROHIBITED
        );
    }

    #[test]
    fn private_components_read_as_sensitive_and_absent_types_as_invalid() {
        let plan = key_pair_plan(
            CKM_EC_KEY_PAIR_GEN,
            t(&[(CKA_EC_PARAMS, P256_OID.to_vec())]),
            AttrMap::new(),
        )
        .unwrap();
        assert_eq!(read(&plan.private, CKA_VALUE), AttributeValue::Sensitive);
        assert_eq!(read(&plan.private, CKA_PRIME_1), AttributeValue::Sensitive);
        assert_eq!(
            read(&plan.private, CKA_SIGN),
            AttributeValue::Value(b(true))
        );
        assert_eq!(read(&plan.private, CKA_URL), AttributeValue::Invalid);
        assert_eq!(read(&plan.public, CKA_VALUE), AttributeValue::Invalid);
        assert!(matches(&plan.private, &t(&[(CKA_SIGN, b(true))])));
        assert!(!matches(&plan.private, &t(&[(CKA_SIGN, b(false))])));
        assert!(!matches(&plan.private, &t(&[(CKA_URL, vec![])])));
        assert_eq!(from_list(&to_list(&plan.private)), plan.private);
    }
}
