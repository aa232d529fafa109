//! Secret key templates (CKO_SECRET_KEY: CKK_AES and CKK_GENERIC_SECRET):
//! the rules for C_GenerateKey and for C_CreateObject with a CKA_VALUE,
//! and the [`KeyPolicy`] the card binds into the key's blob.
//!
//! Documented decisions:
//! - Every usage flag (CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY,
//!   CKA_WRAP, CKA_UNWRAP, CKA_DERIVE) is bound into the blob and cannot
//!   change afterwards. Defaults: AES keys encrypt, decrypt, sign and
//!   verify (CMAC); generic secrets sign and verify (HMAC); nothing wraps,
//!   unwraps or derives unless asked.
//! - Conflicting roles (wrap with decrypt, unwrap with encrypt or
//!   decrypt; Clulow 2003) are CKR_TEMPLATE_INCONSISTENT, for every way a
//!   secret key comes to exist: see [`super::key_roles`]. A key asked to
//!   wrap or unwrap therefore neither encrypts, decrypts, signs nor
//!   verifies by default (it may still be asked to sign or verify).
//!   Clients whose default templates ask for every usage (python-pkcs11's
//!   AES keys) must say which role they want.
//! - CKA_SENSITIVE defaults to true, CKA_EXTRACTABLE to false.
//! - CKA_VALUE is never readable (CKR_ATTRIBUTE_SENSITIVE), even for a
//!   non-sensitive extractable key: the daemon keeps no copy, and the card
//!   hands key values out only wrapped.
//! - Generic secrets are 1 to 64 bytes ([`MAX_GENERIC_SECRET`]); AES keys
//!   16, 24 or 32 (CKR_ATTRIBUTE_VALUE_INVALID otherwise).
//! - CKA_CHECK_VALUE is computed by the card and may not be given.

use cryptoki_sys::*;
use mesign_proto::attr;
use mesign_proto::Attribute;
use pci_driver_shim::command::{KeyPolicy, KeySpec, MAX_GENERIC_SECRET};
use zeroize::{Zeroize, Zeroizing};

use super::{
    allowed_types, check_types, default, default_bool, flag, storage_defaults, ulong, AttrMap,
};
use crate::error::HsmError;

/// A checked secret-key template, ready for the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeyPlan {
    pub spec: KeySpec,
    /// The object's attributes, without CKA_VALUE and CKA_CHECK_VALUE.
    pub attrs: AttrMap,
}

impl SecretKeyPlan {
    /// The policy the card binds into the blob of object `object_id`.
    pub fn policy(&self, object_id: u64) -> KeyPolicy {
        super::key_policy(&self.attrs, self.spec, object_id, true)
    }

    /// Adds the check value the card computed.
    pub fn add_check_value(&mut self, check_value: Vec<u8>) {
        self.attrs.insert(CKA_CHECK_VALUE, check_value);
    }
}

/// True if a C_CreateObject template describes a secret key (which the
/// card must wrap, so it takes its own path).
pub fn is_secret_key(template: &[Attribute]) -> bool {
    template
        .iter()
        .any(|a| a.ty == CKA_CLASS && attr::read_ulong(&a.value) == Some(CKO_SECRET_KEY))
}

/// Overwrites every CKA_VALUE in a template that carried a key value.
pub fn zeroize_values(template: &mut [Attribute]) {
    for a in template.iter_mut().filter(|a| a.ty == CKA_VALUE) {
        a.value.zeroize();
    }
}

/// Validates a C_GenerateKey template and fills in the defaults.
pub fn generate_plan(mechanism: u64, template: AttrMap) -> Result<SecretKeyPlan, HsmError> {
    let key_type = match mechanism {
        CKM_AES_KEY_GEN => CKK_AES,
        CKM_GENERIC_SECRET_KEY_GEN => CKK_GENERIC_SECRET,
        other => return Err(HsmError::MechanismInvalid(other)),
    };
    if ulong(&template, CKA_KEY_TYPE).is_some_and(|k| k != key_type) {
        return Err(HsmError::TemplateInconsistent(CKA_KEY_TYPE));
    }
    let len = ulong(&template, CKA_VALUE_LEN).ok_or(HsmError::TemplateIncomplete(CKA_VALUE_LEN))?;
    let mut map = checked(template, key_type, &[CKA_VALUE, CKA_CHECK_VALUE])?;
    let spec = spec(key_type, len).ok_or(HsmError::AttributeValueInvalid(CKA_VALUE_LEN))?;
    map.insert(CKA_LOCAL, attr::bool_value(true));
    map.insert(CKA_KEY_GEN_MECHANISM, attr::ulong_value(mechanism));
    finish(map, spec, true)
}

/// Validates a C_CreateObject template for a secret key; returns the plan
/// and the key value, which the daemon only passes on to the card.
pub fn import_plan(mut template: AttrMap) -> Result<(SecretKeyPlan, Zeroizing<Vec<u8>>), HsmError> {
    let value = Zeroizing::new(template.remove(&CKA_VALUE).unwrap_or_default());
    let key_type =
        ulong(&template, CKA_KEY_TYPE).ok_or(HsmError::TemplateIncomplete(CKA_KEY_TYPE))?;
    if value.is_empty() {
        return Err(HsmError::TemplateIncomplete(CKA_VALUE));
    }
    if ulong(&template, CKA_VALUE_LEN).is_some_and(|l| l != value.len() as u64) {
        return Err(HsmError::TemplateInconsistent(CKA_VALUE_LEN));
    }
    let mut map = checked(template, key_type, &[CKA_CHECK_VALUE])?;
    let spec =
        spec(key_type, value.len() as u64).ok_or(HsmError::AttributeValueInvalid(CKA_VALUE))?;
    map.insert(CKA_LOCAL, attr::bool_value(false));
    map.insert(
        CKA_KEY_GEN_MECHANISM,
        attr::ulong_value(CK_UNAVAILABLE_INFORMATION),
    );
    Ok((finish(map, spec, false)?, value))
}

/// Validates a C_DeriveKey template for the secret key a derivation
/// (CKM_ECDH1_DERIVE) makes. CKA_KEY_TYPE defaults to CKK_GENERIC_SECRET;
/// CKA_VALUE_LEN is required, except that a generic secret may take
/// `default_len` (the shared secret's length with CKD_NULL). The key is
/// not local; CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE stay true only
/// if they were true for the base key and the new key is sensitive and
/// unextractable (PKCS#11 3.0 §4.10, key derivation).
pub fn derive_plan(
    template: AttrMap,
    default_len: Option<u64>,
    base_always_sensitive: bool,
    base_never_extractable: bool,
) -> Result<SecretKeyPlan, HsmError> {
    let key_type = ulong(&template, CKA_KEY_TYPE).unwrap_or(CKK_GENERIC_SECRET);
    let len = match ulong(&template, CKA_VALUE_LEN) {
        Some(len) => len,
        None if key_type == CKK_GENERIC_SECRET => {
            default_len.ok_or(HsmError::TemplateIncomplete(CKA_VALUE_LEN))?
        }
        None => return Err(HsmError::TemplateIncomplete(CKA_VALUE_LEN)),
    };
    let mut map = checked(template, key_type, &[CKA_VALUE, CKA_CHECK_VALUE])?;
    let spec = spec(key_type, len).ok_or(HsmError::AttributeValueInvalid(CKA_VALUE_LEN))?;
    map.insert(CKA_LOCAL, attr::bool_value(false));
    map.insert(
        CKA_KEY_GEN_MECHANISM,
        attr::ulong_value(CK_UNAVAILABLE_INFORMATION),
    );
    let mut plan = finish(map, spec, false)?;
    let on = |ty| flag(&plan.attrs, ty) == Some(true);
    let always_sensitive = base_always_sensitive && on(CKA_SENSITIVE);
    let never_extractable = base_never_extractable && !on(CKA_EXTRACTABLE);
    plan.attrs
        .insert(CKA_ALWAYS_SENSITIVE, attr::bool_value(always_sensitive));
    plan.attrs
        .insert(CKA_NEVER_EXTRACTABLE, attr::bool_value(never_extractable));
    Ok(plan)
}

/// Validates a C_UnwrapKey template for a secret key (the caller's
/// template with the unwrapping key's CKA_UNWRAP_TEMPLATE merged in). The
/// value's length is the unwrapped key's, which only the card learns: the
/// plan's spec has a length of zero until [`SecretKeyPlan::set_spec`]
/// records the card's answer. Returns the plan and the CKA_VALUE_LEN the
/// template asked for, if any. Unwrapped keys are not local, and were
/// outside the card: CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE are
/// false.
pub fn unwrap_plan(template: AttrMap) -> Result<(SecretKeyPlan, Option<u64>), HsmError> {
    let key_type =
        ulong(&template, CKA_KEY_TYPE).ok_or(HsmError::TemplateIncomplete(CKA_KEY_TYPE))?;
    let wanted_len = ulong(&template, CKA_VALUE_LEN);
    let mut map = checked(template, key_type, &[CKA_VALUE, CKA_CHECK_VALUE])?;
    let spec = if key_type == CKK_AES {
        KeySpec::Aes { bytes: 0 }
    } else {
        KeySpec::GenericSecret { bytes: 0 }
    };
    map.insert(CKA_LOCAL, attr::bool_value(false));
    map.insert(
        CKA_KEY_GEN_MECHANISM,
        attr::ulong_value(CK_UNAVAILABLE_INFORMATION),
    );
    Ok((finish(map, spec, false)?, wanted_len))
}

impl SecretKeyPlan {
    /// Records the spec the card found for an unwrapped key (its kind is
    /// the plan's, its length the value's) and the matching CKA_VALUE_LEN.
    pub fn set_spec(&mut self, spec: KeySpec) -> Result<(), HsmError> {
        let bytes = match (self.spec, spec) {
            (KeySpec::Aes { .. }, KeySpec::Aes { bytes })
            | (KeySpec::GenericSecret { .. }, KeySpec::GenericSecret { bytes }) => bytes,
            _ => return Err(HsmError::Card(crate::card::CardFailure::UnexpectedResponse)),
        };
        self.spec = spec;
        self.attrs
            .insert(CKA_VALUE_LEN, attr::ulong_value(u64::from(bytes)));
        Ok(())
    }
}

/// The card's spec for a key type and value length, if the card makes it.
fn spec(key_type: u64, len: u64) -> Option<KeySpec> {
    let bytes = u32::try_from(len).ok()?;
    match key_type {
        CKK_AES if matches!(bytes, 16 | 24 | 32) => Some(KeySpec::Aes { bytes }),
        CKK_GENERIC_SECRET if (1..=MAX_GENERIC_SECRET).contains(&bytes) => {
            Some(KeySpec::GenericSecret { bytes })
        }
        _ => None,
    }
}

/// Checks the class, the key type and the attribute types of a template.
fn checked(mut map: AttrMap, key_type: u64, read_only: &[u64]) -> Result<AttrMap, HsmError> {
    if ulong(&map, CKA_CLASS).is_some_and(|c| c != CKO_SECRET_KEY) {
        return Err(HsmError::TemplateInconsistent(CKA_CLASS));
    }
    if !matches!(key_type, CKK_AES | CKK_GENERIC_SECRET) {
        return Err(HsmError::AttributeValueInvalid(CKA_KEY_TYPE));
    }
    check_types(
        &map,
        &allowed_types(CKO_SECRET_KEY, Some(key_type)),
        read_only,
    )?;
    if flag(&map, CKA_TRUSTED) == Some(true) {
        // Only the SO may mark keys trusted, and the SO has no key access.
        return Err(HsmError::AttributeReadOnly(CKA_TRUSTED));
    }
    map.insert(CKA_CLASS, attr::ulong_value(CKO_SECRET_KEY));
    map.insert(CKA_KEY_TYPE, attr::ulong_value(key_type));
    Ok(map)
}

/// Defaults, the role-conflict check and the computed attributes.
fn finish(mut map: AttrMap, spec: KeySpec, local: bool) -> Result<SecretKeyPlan, HsmError> {
    let aes = matches!(spec, KeySpec::Aes { .. });
    // A key asked to wrap or unwrap is no data key by default (see
    // `key_roles`).
    let wrapping = flag(&map, CKA_WRAP) == Some(true) || flag(&map, CKA_UNWRAP) == Some(true);
    default_bool(&mut map, CKA_ENCRYPT, aes && !wrapping);
    default_bool(&mut map, CKA_DECRYPT, aes && !wrapping);
    // Nor a MAC key: a key-encryption key does one job.
    default_bool(&mut map, CKA_SIGN, !wrapping);
    default_bool(&mut map, CKA_VERIFY, !wrapping);
    for ty in [
        CKA_WRAP,
        CKA_UNWRAP,
        CKA_DERIVE,
        CKA_TRUSTED,
        CKA_WRAP_WITH_TRUSTED,
    ] {
        default_bool(&mut map, ty, false);
    }
    default_bool(&mut map, CKA_SENSITIVE, true);
    default_bool(&mut map, CKA_EXTRACTABLE, false);
    super::key_roles::check(&map)?;
    let on = |ty| flag(&map, ty) == Some(true);
    let (sensitive, extractable) = (on(CKA_SENSITIVE), on(CKA_EXTRACTABLE));
    map.insert(CKA_ALWAYS_SENSITIVE, attr::bool_value(local && sensitive));
    map.insert(
        CKA_NEVER_EXTRACTABLE,
        attr::bool_value(local && !extractable),
    );
    let bytes = match spec {
        KeySpec::Aes { bytes } | KeySpec::GenericSecret { bytes } => bytes,
        _ => return Err(HsmError::Internal),
    };
    map.insert(CKA_VALUE_LEN, attr::ulong_value(u64::from(bytes)));
    default(&mut map, CKA_ID, Vec::new());
    default(&mut map, CKA_START_DATE, Vec::new());
    default(&mut map, CKA_END_DATE, Vec::new());
    storage_defaults(&mut map, true);
    Ok(SecretKeyPlan { spec, attrs: map })
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_support::{b, rv, t, u};

    #[test]
    fn generation_checks_sizes_and_fills_computed_attributes() {
        let plan = generate_plan(CKM_AES_KEY_GEN, t(&[(CKA_VALUE_LEN, u(32))])).unwrap();
        assert_eq!(plan.spec, KeySpec::Aes { bytes: 32 });
        let get = |ty| flag(&plan.attrs, ty);
        assert_eq!(get(CKA_LOCAL), Some(true));
        assert_eq!(get(CKA_ALWAYS_SENSITIVE), Some(true));
        assert_eq!(get(CKA_NEVER_EXTRACTABLE), Some(true));
        assert_eq!(get(CKA_ENCRYPT), Some(true));
        assert_eq!(get(CKA_WRAP), Some(false));
        let policy = plan.policy(5);
        assert!(policy.sign && policy.decrypt && policy.sensitive && !policy.extractable);
        assert_eq!(policy.secret.map(|s| s.encrypt), Some(true));
        for (mechanism, len, want) in [
            (CKM_AES_KEY_GEN, 20, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKM_GENERIC_SECRET_KEY_GEN, 0, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKM_GENERIC_SECRET_KEY_GEN, 65, CKR_ATTRIBUTE_VALUE_INVALID),
            (CKM_DES3_KEY_GEN, 24, CKR_MECHANISM_INVALID),
        ] {
            assert_eq!(
                rv(generate_plan(mechanism, t(&[(CKA_VALUE_LEN, u(len))]))),
                want
            );
        }
        assert!(generate_plan(CKM_GENERIC_SECRET_KEY_GEN, t(&[(CKA_VALUE_LEN, u(64))])).is_ok());
        assert_eq!(
            rv(generate_plan(CKM_AES_KEY_GEN, t(&[]))),
            CKR_TEMPLATE_INCOMPLETE
        );
        assert_eq!(
            rv(generate_plan(
                CKM_AES_KEY_GEN,
                t(&[
                    (CKA_VALUE_LEN, u(16)),
                    (CKA_KEY_TYPE, u(CKK_GENERIC_SECRET))
                ])
            )),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            rv(generate_plan(
                CKM_AES_KEY_GEN,
                t(&[(CKA_VALUE_LEN, u(16)), (CKA_CHECK_VALUE, vec![1, 2, 3])])
            )),
            CKR_ATTRIBUTE_READ_ONLY
        );
    }

    #[test]
    fn every_usage_is_bound_into_the_policy() {
        let template = t(&[
            (CKA_VALUE_LEN, u(16)),
            (CKA_WRAP, b(true)),
            (CKA_UNWRAP, b(true)),
            (CKA_VERIFY, b(false)),
        ]);
        let policy = generate_plan(CKM_AES_KEY_GEN, template).unwrap().policy(1);
        // A wrapping key is no data key and no MAC key by default
        // (`key_roles`).
        assert!(policy.unwrap && !policy.decrypt && !policy.sign);
        let usage = policy.secret.unwrap();
        assert!(usage.wrap && !usage.encrypt && !usage.verify);
        let wrap_only = t(&[(CKA_VALUE_LEN, u(16)), (CKA_WRAP, b(true))]);
        let policy = generate_plan(CKM_AES_KEY_GEN, wrap_only).unwrap().policy(3);
        assert!(!policy.sign && policy.secret.is_some_and(|u| u.wrap && !u.verify));
        let asked = t(&[
            (CKA_VALUE_LEN, u(16)),
            (CKA_UNWRAP, b(true)),
            (CKA_SIGN, b(true)),
        ]);
        let policy = generate_plan(CKM_AES_KEY_GEN, asked).unwrap().policy(4);
        assert!(policy.sign && policy.unwrap, "asked for, it signs");
        let data = t(&[
            (CKA_VALUE_LEN, u(16)),
            (CKA_DERIVE, b(true)),
            (CKA_SIGN, b(false)),
        ]);
        let policy = generate_plan(CKM_AES_KEY_GEN, data).unwrap().policy(2);
        assert!(policy.decrypt && policy.derive && !policy.sign && !policy.unwrap);
        assert!(policy
            .secret
            .is_some_and(|u| u.encrypt && u.verify && !u.wrap));
    }

    #[test]
    fn conflicting_roles_are_refused_for_generated_and_imported_keys() {
        for (a, b_) in [
            (CKA_WRAP, CKA_DECRYPT),
            (CKA_UNWRAP, CKA_ENCRYPT),
            (CKA_UNWRAP, CKA_DECRYPT),
        ] {
            let generated = t(&[(CKA_VALUE_LEN, u(16)), (a, b(true)), (b_, b(true))]);
            assert_eq!(
                rv(generate_plan(CKM_AES_KEY_GEN, generated)),
                CKR_TEMPLATE_INCONSISTENT
            );
            let imported = t(&[
                (CKA_CLASS, u(CKO_SECRET_KEY)),
                (CKA_KEY_TYPE, u(CKK_AES)),
                (CKA_VALUE, vec![1; 16]),
                (a, b(true)),
                (b_, b(true)),
            ]);
            assert_eq!(rv(import_plan(imported)), CKR_TEMPLATE_INCONSISTENT);
        }
    }

    #[test]
    fn imported_keys_are_not_local_and_keep_no_value() {
        let template = t(&[
            (CKA_CLASS, u(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, u(CKK_GENERIC_SECRET)),
            (CKA_VALUE, vec![9; 20]),
            (CKA_SENSITIVE, b(false)),
            (CKA_EXTRACTABLE, b(true)),
        ]);
        let (plan, value) = import_plan(template).unwrap();
        assert_eq!(value.as_slice(), &[9; 20]);
        assert_eq!(plan.spec, KeySpec::GenericSecret { bytes: 20 });
        assert!(!plan.attrs.contains_key(&CKA_VALUE));
        for ty in [CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE] {
            assert_eq!(flag(&plan.attrs, ty), Some(false));
        }
        assert_eq!(ulong(&plan.attrs, CKA_VALUE_LEN), Some(20));
        let aes = |len| {
            t(&[
                (CKA_CLASS, u(CKO_SECRET_KEY)),
                (CKA_KEY_TYPE, u(CKK_AES)),
                (CKA_VALUE, vec![1; len]),
            ])
        };
        assert_eq!(rv(import_plan(aes(17))), CKR_ATTRIBUTE_VALUE_INVALID);
        assert!(import_plan(aes(24)).is_ok());
        let mut without_value = aes(16);
        without_value.remove(&CKA_VALUE);
        assert_eq!(rv(import_plan(without_value)), CKR_TEMPLATE_INCOMPLETE);
        let mut template = vec![Attribute {
            ty: CKA_VALUE,
            value: vec![5; 16],
        }];
        zeroize_values(&mut template);
        assert!(template[0].value.iter().all(|&b| b == 0));
    }
}
