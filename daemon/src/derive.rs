//! C_DeriveKey with CKM_ECDH1_DERIVE: the card agrees a shared secret
//! between an EC private key (CKA_DERIVE true, bound into its blob) and a
//! peer's public point, runs it through the KDF and wraps the result as a
//! new secret key; the daemon sees neither the shared secret nor the key.
//!
//! Documented decisions:
//! - KDFs: CKD_NULL (no shared data; the shared secret truncated from the
//!   leading end), and the ANSI X9.63 KDF as CKD_SHA224_KDF,
//!   CKD_SHA256_KDF, CKD_SHA384_KDF and CKD_SHA512_KDF with any shared
//!   data. Others (CKD_SHA1_KDF, the SP 800-56 KDFs) are
//!   CKR_MECHANISM_PARAM_INVALID.
//! - The public data may be the raw uncompressed point or a DER OCTET
//!   STRING around it (clients send both: PKCS#11 3.0 says raw, older
//!   OpenSC and NSS wrap it). A point of another form or size, off the
//!   curve, or the point at infinity is CKR_MECHANISM_PARAM_INVALID: the
//!   card validates every point, the daemon only unwraps.
//! - The derived key follows the secret-key template rules
//!   ([`secret_keys::derive_plan`]): AES keys need CKA_VALUE_LEN (16, 24,
//!   32), generic secrets default to the shared secret's length with
//!   CKD_NULL (P-256: 32, P-384: 48; P-521's 66 bytes exceed the card's
//!   64-byte generic secrets, so CKA_VALUE_LEN is needed there:
//!   CKR_TEMPLATE_INCOMPLETE without it) and need
//!   CKA_VALUE_LEN with a KDF. CKD_NULL cannot give more bytes than the
//!   shared secret has (CKR_ATTRIBUTE_VALUE_INVALID).

use cryptoki_sys::*;
use mesign_proto::{Attribute, EcdhParams};
use pci_driver_shim::command::{CardRequest, Curve, Hash, Kdf, KeySpec, MAX_GENERIC_SECRET};

use super::{Hsm, KeyUse};
use crate::attributes::{self, secret_keys};
use crate::error::HsmError;
use crate::sessions::AppKey;

/// DER tag of an OCTET STRING.
const OCTET_STRING: u8 = 0x04;

impl Hsm {
    /// C_DeriveKey.
    pub(super) fn derive_key(
        &self,
        app: AppKey,
        session: u64,
        mechanism: u64,
        base: u64,
        params: &EcdhParams,
        template: &[Attribute],
    ) -> Result<u64, HsmError> {
        let view = self.view(app, session)?;
        if mechanism != CKM_ECDH1_DERIVE {
            return Err(HsmError::MechanismInvalid(mechanism));
        }
        let (card_key, always_sensitive, never_extractable) = {
            let slot = self.slot(view.slot)?;
            let state = slot.read();
            let key = Self::usable_key(
                &state.objects,
                &view,
                base,
                KeyUse::private(CKA_DERIVE, mechanism),
            )?;
            let attrs = &state
                .objects
                .get(key.id)
                .ok_or(HsmError::KeyHandleInvalid(base))?
                .attrs;
            let on = |ty| attributes::flag(attrs, ty) == Some(true);
            (
                key.card_key,
                on(CKA_ALWAYS_SENSITIVE),
                on(CKA_NEVER_EXTRACTABLE),
            )
        };
        let KeySpec::Ec(curve) = card_key.policy.spec else {
            return Err(HsmError::KeyTypeInconsistent);
        };
        let kdf = kdf(params)?;
        let peer = peer_point(curve, &params.public_data)?;
        // P-521's 66-byte secret is longer than the card's generic
        // secrets: there the template must say how much of it to keep.
        let default_len = (kdf == Kdf::Null && curve.scalar_len() <= MAX_GENERIC_SECRET as usize)
            .then_some(curve.scalar_len() as u64);
        let plan = secret_keys::derive_plan(
            attributes::parse_template(template)?,
            default_len,
            always_sensitive,
            never_extractable,
        )?;
        let len = match plan.spec {
            KeySpec::Aes { bytes } | KeySpec::GenericSecret { bytes } => bytes as usize,
            _ => return Err(HsmError::Internal),
        };
        if kdf == Kdf::Null && len > curve.scalar_len() {
            return Err(HsmError::AttributeValueInvalid(CKA_VALUE_LEN));
        }
        let shared_data = params.shared_data.clone();
        self.new_secret_key(app, &view, plan, |derived| CardRequest::DeriveEcdh {
            blob: card_key.blob.clone(),
            policy: card_key.policy.clone(),
            peer,
            kdf,
            shared_data,
            derived,
        })
    }
}

/// The card's KDF for the parameters' CKD_* value.
fn kdf(params: &EcdhParams) -> Result<Kdf, HsmError> {
    let kdf = match params.kdf {
        CKD_NULL if params.shared_data.is_empty() => Kdf::Null,
        CKD_SHA224_KDF => Kdf::X963(Hash::Sha224),
        CKD_SHA256_KDF => Kdf::X963(Hash::Sha256),
        CKD_SHA384_KDF => Kdf::X963(Hash::Sha384),
        CKD_SHA512_KDF => Kdf::X963(Hash::Sha512),
        _ => return Err(HsmError::MechanismParamInvalid),
    };
    Ok(kdf)
}

/// The uncompressed point in the public data: as given if it has the
/// curve's length, else the content of a DER OCTET STRING of that length.
/// Whether it is a point on the curve is the card's check.
fn peer_point(curve: Curve, data: &[u8]) -> Result<Vec<u8>, HsmError> {
    let point_len = 1 + 2 * curve.scalar_len();
    if data.len() == point_len {
        return Ok(data.to_vec());
    }
    let content = match data {
        [OCTET_STRING, len, rest @ ..] if *len < 0x80 => Some((*len as usize, rest)),
        [OCTET_STRING, 0x81, len, rest @ ..] if *len >= 0x80 => Some((*len as usize, rest)),
        _ => None,
    };
    match content {
        Some((len, rest)) if len == point_len && rest.len() == len => Ok(rest.to_vec()),
        _ => Err(HsmError::MechanismParamInvalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kdf: u64, shared: &[u8]) -> EcdhParams {
        EcdhParams {
            kdf,
            shared_data: shared.to_vec(),
            public_data: vec![],
        }
    }

    fn t(list: &[(u64, Vec<u8>)]) -> attributes::AttrMap {
        list.iter().cloned().collect()
    }

    #[test]
    fn derived_key_templates() {
        use mesign_proto::attr::{bool_value, ulong_value};
        let flag = |plan: &secret_keys::SecretKeyPlan, ty| attributes::flag(&plan.attrs, ty);
        // A generic secret takes the default length; nothing local, and
        // the base key's history carries over.
        let plan = secret_keys::derive_plan(t(&[]), Some(48), true, false).unwrap();
        assert_eq!(plan.spec, KeySpec::GenericSecret { bytes: 48 });
        assert_eq!(flag(&plan, CKA_LOCAL), Some(false));
        assert_eq!(flag(&plan, CKA_ALWAYS_SENSITIVE), Some(true));
        assert_eq!(flag(&plan, CKA_NEVER_EXTRACTABLE), Some(false));
        let aes = |len| {
            t(&[
                (CKA_KEY_TYPE, ulong_value(CKK_AES)),
                (CKA_VALUE_LEN, ulong_value(len)),
            ])
        };
        let plan = secret_keys::derive_plan(aes(24), None, true, true).unwrap();
        assert_eq!(plan.spec, KeySpec::Aes { bytes: 24 });
        assert_eq!(flag(&plan, CKA_NEVER_EXTRACTABLE), Some(true));
        let mut extractable = aes(16);
        extractable.insert(CKA_EXTRACTABLE, bool_value(true));
        extractable.insert(CKA_SENSITIVE, bool_value(false));
        let plan = secret_keys::derive_plan(extractable, None, true, true).unwrap();
        assert_eq!(flag(&plan, CKA_ALWAYS_SENSITIVE), Some(false));
        assert_eq!(flag(&plan, CKA_NEVER_EXTRACTABLE), Some(false));
        let rv = |r: Result<secret_keys::SecretKeyPlan, HsmError>| r.unwrap_err().rv();
        assert_eq!(
            rv(secret_keys::derive_plan(aes(20), None, true, true)),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        let mut no_len = aes(16);
        no_len.remove(&CKA_VALUE_LEN);
        assert_eq!(
            rv(secret_keys::derive_plan(no_len, Some(32), true, true)),
            CKR_TEMPLATE_INCOMPLETE
        );
        assert_eq!(
            rv(secret_keys::derive_plan(t(&[]), None, true, true)),
            CKR_TEMPLATE_INCOMPLETE
        );
        let value = t(&[(CKA_VALUE, vec![1; 16])]);
        assert_eq!(
            rv(secret_keys::derive_plan(value, Some(16), true, true)),
            CKR_ATTRIBUTE_READ_ONLY
        );
    }

    #[test]
    fn kdfs_and_their_shared_data() {
        assert_eq!(kdf(&params(CKD_NULL, b"")).ok(), Some(Kdf::Null));
        assert_eq!(
            kdf(&params(CKD_SHA384_KDF, b"info")).ok(),
            Some(Kdf::X963(Hash::Sha384))
        );
        for bad in [
            params(CKD_NULL, b"info"),
            params(CKD_SHA1_KDF, b""),
            params(0x1234, b""),
        ] {
            assert_eq!(kdf(&bad).unwrap_err().rv(), CKR_MECHANISM_PARAM_INVALID);
        }
    }

    #[test]
    fn public_data_raw_or_in_an_octet_string() {
        let mut raw = vec![4u8; 65];
        raw[1] = 9;
        assert_eq!(peer_point(Curve::P256, &raw).unwrap(), raw);
        let mut der = vec![0x04, 65];
        der.extend_from_slice(&raw);
        assert_eq!(peer_point(Curve::P256, &der).unwrap(), raw);
        let p521 = vec![4u8; 133];
        let mut der = vec![0x04, 0x81, 133];
        der.extend_from_slice(&p521);
        assert_eq!(peer_point(Curve::P521, &der).unwrap(), p521);
        for bad in [
            &raw[..64],
            &der[..40],
            &[0x04, 0x81, 65][..],
            &[0u8][..],
            &[][..],
        ] {
            assert_eq!(
                peer_point(Curve::P256, bad).unwrap_err().rv(),
                CKR_MECHANISM_PARAM_INVALID
            );
        }
        // A P-256 point in an OCTET STRING is not a P-384 point.
        let mut der = vec![0x04, 65];
        der.extend_from_slice(&raw);
        assert!(peer_point(Curve::P384, &der).is_err());
    }
}
