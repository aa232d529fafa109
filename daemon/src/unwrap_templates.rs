//! Templates of the keys C_UnwrapKey makes: the caller's template merged
//! with the unwrapping key's CKA_UNWRAP_TEMPLATE, then checked by the same
//! rules as any other new key of its class (secret keys through
//! [`super::secret_keys`], private keys here, both through
//! [`super::key_roles`]).
//!
//! Documented decisions:
//! - CKA_CLASS and CKA_KEY_TYPE are required (CKR_TEMPLATE_INCOMPLETE):
//!   the wrapped bytes do not say what they hold.
//! - An attribute the caller gives and the unwrapping key's
//!   CKA_UNWRAP_TEMPLATE also fixes must agree with it
//!   (CKR_TEMPLATE_INCONSISTENT); attributes only the unwrap template has
//!   are added. So a key cannot be unwrapped weaker than the unwrapping
//!   key allows.
//! - Unwrapped keys are not local and have been outside the card:
//!   CKA_LOCAL, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE are false,
//!   CKA_KEY_GEN_MECHANISM unavailable; CKA_SENSITIVE defaults to true.
//! - An unwrapped key is unextractable unless the unwrapping key's
//!   CKA_UNWRAP_TEMPLATE says CKA_EXTRACTABLE true; a template asking for
//!   an extractable key without that is CKR_TEMPLATE_INCONSISTENT (a
//!   refusal, not a silent false, so the caller learns the key would not
//!   be what it asked for). Otherwise unwrap-then-wrap under a key the
//!   caller knows turns every unwrapping key into a decryption oracle. A
//!   deliberate difference from SoftHSMv2.
//! - Private keys (RSA, EC, Ed25519) come as PKCS#8 inside the wrap; the
//!   card reports the key's size or curve and public key, which fill
//!   CKA_MODULUS / CKA_PUBLIC_EXPONENT or CKA_EC_PARAMS / CKA_EC_POINT. An
//!   EC or Ed25519 key may not decrypt or unwrap (it cannot), an RSA key
//!   not both.

use cryptoki_sys::*;
use mesign_proto::attr;
use pci_driver_shim::command::{Curve, KeyPolicy, KeySpec, PublicKey};

use super::secret_keys::{self, SecretKeyPlan};
use super::{
    allowed_types, check_types, curve_oid, default_bool, ec_point_der, flag, key_defaults,
    key_roles, storage_defaults, ulong, AttrMap, ED25519_NAME,
};
use crate::card::CardFailure;
use crate::error::HsmError;

/// What C_UnwrapKey is to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnwrapPlan {
    /// A secret key, and the CKA_VALUE_LEN the template asked for.
    Secret {
        plan: SecretKeyPlan,
        wanted_len: Option<u64>,
    },
    Private(PrivateKeyPlan),
}

impl UnwrapPlan {
    /// The object's attributes so far.
    pub fn attrs(&self) -> &AttrMap {
        match self {
            UnwrapPlan::Secret { plan, .. } => &plan.attrs,
            UnwrapPlan::Private(plan) => &plan.attrs,
        }
    }

    /// The policy the card binds into the new blob; its spec names the
    /// kind of key, the card fills in the size.
    pub fn policy(&self, object_id: u64) -> KeyPolicy {
        match self {
            UnwrapPlan::Secret { plan, .. } => plan.policy(object_id),
            UnwrapPlan::Private(plan) => plan.policy(object_id),
        }
    }

    /// Completes the attributes with what the card found (the spec, and
    /// the public key of a private key) and returns them.
    pub fn complete(
        self,
        spec: KeySpec,
        check_value: Vec<u8>,
        public: Option<&PublicKey>,
    ) -> Result<AttrMap, HsmError> {
        match self {
            UnwrapPlan::Secret {
                mut plan,
                wanted_len,
            } => {
                plan.set_spec(spec)?;
                if wanted_len.is_some_and(|len| ulong(&plan.attrs, CKA_VALUE_LEN) != Some(len)) {
                    return Err(HsmError::TemplateInconsistent(CKA_VALUE_LEN));
                }
                plan.add_check_value(check_value);
                Ok(plan.attrs)
            }
            UnwrapPlan::Private(mut plan) => {
                let public = public.ok_or(HsmError::Card(CardFailure::UnexpectedResponse))?;
                plan.add_public_key(spec, public)?;
                Ok(plan.attrs)
            }
        }
    }
}

/// A checked private-key template for C_UnwrapKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateKeyPlan {
    /// The kind of key (its size or curve is the card's to find).
    pub spec: KeySpec,
    pub attrs: AttrMap,
}

impl PrivateKeyPlan {
    pub fn policy(&self, object_id: u64) -> KeyPolicy {
        super::key_policy(&self.attrs, self.spec, object_id, false)
    }

    /// Adds the public key the card found; it must be of the planned kind.
    fn add_public_key(&mut self, spec: KeySpec, public: &PublicKey) -> Result<(), HsmError> {
        let unexpected = HsmError::Card(CardFailure::UnexpectedResponse);
        match (self.spec, spec, public) {
            (KeySpec::Rsa { .. }, KeySpec::Rsa { .. }, PublicKey::Rsa { modulus, exponent }) => {
                self.attrs.insert(CKA_MODULUS, modulus.clone());
                self.attrs.insert(CKA_PUBLIC_EXPONENT, exponent.clone());
            }
            (KeySpec::Ec(_), KeySpec::Ec(found), PublicKey::Ec { curve, point })
                if found == *curve =>
            {
                self.attrs.insert(CKA_EC_PARAMS, curve_oid(*curve).to_vec());
                self.attrs.insert(CKA_EC_POINT, ec_point_der(point));
            }
            (KeySpec::Ed25519, KeySpec::Ed25519, PublicKey::Ed25519 { point }) => {
                self.attrs.insert(CKA_EC_PARAMS, ED25519_NAME.to_vec());
                self.attrs.insert(CKA_EC_POINT, ec_point_der(point));
            }
            _ => return Err(unexpected),
        }
        self.spec = spec;
        Ok(())
    }
}

/// Merges the unwrapping key's CKA_UNWRAP_TEMPLATE into the caller's
/// template, and refuses CKA_EXTRACTABLE true unless that unwrap template
/// itself says CKA_EXTRACTABLE true.
pub fn merge(mut template: AttrMap, unwrapping_key: &AttrMap) -> Result<AttrMap, HsmError> {
    let required = match unwrapping_key.get(&CKA_UNWRAP_TEMPLATE) {
        Some(nested) => attr::read_attribute_array(nested).ok_or(HsmError::Internal)?,
        None => Vec::new(),
    };
    let export_allowed = required
        .iter()
        .any(|a| a.ty == CKA_EXTRACTABLE && attr::read_bool(&a.value) == Some(true));
    for a in required {
        match template.get(&a.ty) {
            Some(given) if *given != a.value => {
                return Err(HsmError::TemplateInconsistent(a.ty));
            }
            _ => {
                template.insert(a.ty, a.value);
            }
        }
    }
    // Unwrap-then-wrap: whoever may unwrap under K could otherwise make
    // the new key extractable and wrap it out under a key of their own,
    // turning K into a decryption oracle (for RSA: of any 1-64 byte OAEP
    // plaintext, unwrapped as a generic secret).
    if flag(&template, CKA_EXTRACTABLE) == Some(true) && !export_allowed {
        return Err(HsmError::TemplateInconsistent(CKA_EXTRACTABLE));
    }
    Ok(template)
}

/// Checks a (merged) C_UnwrapKey template and fills in the defaults.
pub fn plan(template: AttrMap) -> Result<UnwrapPlan, HsmError> {
    match ulong(&template, CKA_CLASS) {
        Some(CKO_SECRET_KEY) => {
            let (plan, wanted_len) = secret_keys::unwrap_plan(template)?;
            Ok(UnwrapPlan::Secret { plan, wanted_len })
        }
        Some(CKO_PRIVATE_KEY) => private_plan(template).map(UnwrapPlan::Private),
        Some(_) => Err(HsmError::TemplateInconsistent(CKA_CLASS)),
        None => Err(HsmError::TemplateIncomplete(CKA_CLASS)),
    }
}

fn private_plan(mut map: AttrMap) -> Result<PrivateKeyPlan, HsmError> {
    let key_type = ulong(&map, CKA_KEY_TYPE).ok_or(HsmError::TemplateIncomplete(CKA_KEY_TYPE))?;
    let spec = match key_type {
        CKK_RSA => KeySpec::Rsa { bits: 0 },
        // The curve is the key's; P-256 only names the kind.
        CKK_EC => KeySpec::Ec(Curve::P256),
        CKK_EC_EDWARDS => KeySpec::Ed25519,
        _ => return Err(HsmError::TemplateInconsistent(CKA_KEY_TYPE)),
    };
    check_types(
        &map,
        &allowed_types(CKO_PRIVATE_KEY, Some(key_type)),
        &[
            CKA_MODULUS,
            CKA_PUBLIC_EXPONENT,
            CKA_EC_PARAMS,
            CKA_EC_POINT,
        ],
    )?;
    for (ty, value) in [
        (CKA_SIGN, true),
        (CKA_DECRYPT, false),
        (CKA_UNWRAP, false),
        (CKA_DERIVE, false),
        (CKA_SIGN_RECOVER, false),
        (CKA_SENSITIVE, true),
        (CKA_EXTRACTABLE, false),
        (CKA_WRAP_WITH_TRUSTED, false),
        (CKA_ALWAYS_AUTHENTICATE, false),
    ] {
        default_bool(&mut map, ty, value);
    }
    key_roles::check(&map)?;
    if key_type != CKK_RSA {
        for ty in [CKA_DECRYPT, CKA_UNWRAP] {
            if flag(&map, ty) == Some(true) {
                return Err(HsmError::TemplateInconsistent(ty));
            }
        }
    }
    map.insert(CKA_CLASS, attr::ulong_value(CKO_PRIVATE_KEY));
    map.insert(CKA_KEY_TYPE, attr::ulong_value(key_type));
    map.insert(CKA_LOCAL, attr::bool_value(false));
    map.insert(CKA_ALWAYS_SENSITIVE, attr::bool_value(false));
    map.insert(CKA_NEVER_EXTRACTABLE, attr::bool_value(false));
    map.insert(
        CKA_KEY_GEN_MECHANISM,
        attr::ulong_value(CK_UNAVAILABLE_INFORMATION),
    );
    key_defaults(&mut map);
    storage_defaults(&mut map, true);
    Ok(PrivateKeyPlan { spec, attrs: map })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::Attribute;

    use super::super::test_support::{b, rv, t, u};

    fn aes(extra: &[(u64, Vec<u8>)]) -> AttrMap {
        let mut map = t(&[(CKA_CLASS, u(CKO_SECRET_KEY)), (CKA_KEY_TYPE, u(CKK_AES))]);
        map.extend(extra.iter().cloned());
        map
    }

    #[test]
    fn the_unwrap_template_is_merged_and_cannot_be_contradicted() {
        let nested = attr::attribute_array_value(&[
            Attribute {
                ty: CKA_SENSITIVE,
                value: b(true),
            },
            Attribute {
                ty: CKA_EXTRACTABLE,
                value: b(false),
            },
        ]);
        let unwrapping = t(&[(CKA_UNWRAP_TEMPLATE, nested)]);
        let weaker = aes(&[(CKA_SENSITIVE, b(false))]);
        assert_eq!(rv(merge(weaker, &unwrapping)), CKR_TEMPLATE_INCONSISTENT);
        let exportable = aes(&[(CKA_EXTRACTABLE, b(true))]);
        assert_eq!(
            rv(merge(exportable, &unwrapping)),
            CKR_TEMPLATE_INCONSISTENT
        );
        let merged = merge(aes(&[(CKA_LABEL, b"k".to_vec())]), &unwrapping).unwrap();
        assert_eq!(flag(&merged, CKA_EXTRACTABLE), Some(false));
        assert_eq!(merged.get(&CKA_LABEL), Some(&b"k".to_vec()));
        assert_eq!(merge(aes(&[]), &AttrMap::new()).unwrap(), aes(&[]));
    }

    #[test]
    fn unwrapped_keys_are_extractable_only_if_the_unwrap_template_says_so() {
        let exportable = || aes(&[(CKA_EXTRACTABLE, b(true))]);
        assert_eq!(
            rv(merge(exportable(), &AttrMap::new())),
            CKR_TEMPLATE_INCONSISTENT,
            "no unwrap template: no extractable key"
        );
        let says = |extractable: bool| {
            let nested = attr::attribute_array_value(&[Attribute {
                ty: CKA_EXTRACTABLE,
                value: b(extractable),
            }]);
            t(&[(CKA_UNWRAP_TEMPLATE, nested)])
        };
        let other_only = t(&[(
            CKA_UNWRAP_TEMPLATE,
            attr::attribute_array_value(&[Attribute {
                ty: CKA_SENSITIVE,
                value: b(true),
            }]),
        )]);
        assert_eq!(
            rv(merge(exportable(), &other_only)),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            rv(merge(exportable(), &says(false))),
            CKR_TEMPLATE_INCONSISTENT
        );
        let merged = merge(exportable(), &says(true)).unwrap();
        assert_eq!(flag(&merged, CKA_EXTRACTABLE), Some(true));
        let merged = merge(aes(&[]), &says(true)).unwrap();
        assert_eq!(flag(&merged, CKA_EXTRACTABLE), Some(true));
        let planned = plan(merge(aes(&[]), &AttrMap::new()).unwrap()).unwrap();
        assert!(
            !planned.policy(1).extractable,
            "the default is unextractable"
        );
        let unextractable = aes(&[(CKA_EXTRACTABLE, b(false))]);
        assert!(merge(unextractable, &AttrMap::new()).is_ok());
        // The RSA-oracle form: a generic secret out of an RSA unwrap.
        let generic = t(&[
            (CKA_CLASS, u(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, u(CKK_GENERIC_SECRET)),
            (CKA_EXTRACTABLE, b(true)),
        ]);
        assert_eq!(
            rv(merge(generic, &AttrMap::new())),
            CKR_TEMPLATE_INCONSISTENT
        );
    }

    #[test]
    fn unwrapped_secret_keys_are_not_local_and_take_the_cards_length() {
        let planned = plan(aes(&[(CKA_VALUE_LEN, u(32))])).unwrap();
        let policy = planned.policy(9);
        assert_eq!(policy.spec, KeySpec::Aes { bytes: 0 });
        assert!(policy.sensitive && !policy.extractable);
        let attrs = planned
            .clone()
            .complete(KeySpec::Aes { bytes: 32 }, vec![1, 2, 3], None)
            .unwrap();
        for ty in [CKA_LOCAL, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE] {
            assert_eq!(flag(&attrs, ty), Some(false), "{ty:#x}");
        }
        assert_eq!(ulong(&attrs, CKA_VALUE_LEN), Some(32));
        assert_eq!(attrs.get(&CKA_CHECK_VALUE), Some(&vec![1, 2, 3]));
        assert_eq!(
            rv(planned.complete(KeySpec::Aes { bytes: 16 }, vec![], None)),
            CKR_TEMPLATE_INCONSISTENT
        );
        for (template, want) in [
            (t(&[(CKA_KEY_TYPE, u(CKK_AES))]), CKR_TEMPLATE_INCOMPLETE),
            (
                t(&[(CKA_CLASS, u(CKO_SECRET_KEY))]),
                CKR_TEMPLATE_INCOMPLETE,
            ),
            (t(&[(CKA_CLASS, u(CKO_DATA))]), CKR_TEMPLATE_INCONSISTENT),
            (aes(&[(CKA_VALUE, vec![1; 16])]), CKR_ATTRIBUTE_READ_ONLY),
            (
                aes(&[(CKA_WRAP, b(true)), (CKA_DECRYPT, b(true))]),
                CKR_TEMPLATE_INCONSISTENT,
            ),
            (
                aes(&[(CKA_UNWRAP, b(true)), (CKA_ENCRYPT, b(true))]),
                CKR_TEMPLATE_INCONSISTENT,
            ),
        ] {
            assert_eq!(rv(plan(template.clone())), want, "{template:?}");
        }
    }

    #[test]
    fn unwrapped_private_keys_get_their_public_half_from_the_card() {
        let ec = t(&[(CKA_CLASS, u(CKO_PRIVATE_KEY)), (CKA_KEY_TYPE, u(CKK_EC))]);
        let planned = plan(ec.clone()).unwrap();
        let policy = planned.policy(3);
        assert!(policy.sign && !policy.decrypt && policy.sensitive && policy.secret.is_none());
        let point = [&[4u8][..], &[7; 96]].concat();
        let public = PublicKey::Ec {
            curve: Curve::P384,
            point: point.clone(),
        };
        let attrs = planned
            .clone()
            .complete(KeySpec::Ec(Curve::P384), vec![], Some(&public))
            .unwrap();
        assert_eq!(attrs.get(&CKA_EC_POINT), Some(&ec_point_der(&point)));
        assert_eq!(
            attrs.get(&CKA_EC_PARAMS).map(Vec::as_slice),
            Some(curve_oid(Curve::P384))
        );
        assert_eq!(flag(&attrs, CKA_LOCAL), Some(false));
        assert_eq!(flag(&attrs, CKA_NEVER_EXTRACTABLE), Some(false));
        let rsa_public = PublicKey::Rsa {
            modulus: vec![0xc5; 256],
            exponent: vec![1, 0, 1],
        };
        assert!(planned
            .complete(KeySpec::Rsa { bits: 2048 }, vec![], Some(&rsa_public))
            .is_err());
        let mut decrypting_ec = ec.clone();
        decrypting_ec.insert(CKA_DECRYPT, b(true));
        assert_eq!(rv(plan(decrypting_ec)), CKR_TEMPLATE_INCONSISTENT);
        let rsa_both = t(&[
            (CKA_CLASS, u(CKO_PRIVATE_KEY)),
            (CKA_KEY_TYPE, u(CKK_RSA)),
            (CKA_DECRYPT, b(true)),
            (CKA_UNWRAP, b(true)),
        ]);
        assert_eq!(rv(plan(rsa_both)), CKR_TEMPLATE_INCONSISTENT);
        let mut with_point = ec;
        with_point.insert(CKA_EC_POINT, vec![4, 1, 4]);
        assert_eq!(rv(plan(with_point)), CKR_ATTRIBUTE_READ_ONLY);
    }
}
