//! What signing and verifying need to know about a key, fetched with one
//! GetAttributes request at *Init: class, type, usage flag, allowed
//! mechanisms, CKA_ALWAYS_AUTHENTICATE, and the sizes that answer length
//! queries without the card.
//!
//! Token keys' answers are kept in a [`KeyCache`], so that the C_SignInit
//! before every C_Sign costs no round trip and a signature costs exactly
//! one. What a cached answer could miss is a change made by *another*
//! application: usage flags of card keys cannot change after generation
//! (the daemon refuses it), and a key destroyed elsewhere is reported by
//! the daemon at C_Sign, which re-checks everything. This application's own
//! C_DestroyObject, C_SetAttributeValue, C_Logout, C_InitToken and closing
//! its last session drop the cached answers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cryptoki_sys::*;
use mesign_proto::{attr, AttributeValue, ReplyBody, RequestBody};

use crate::error::Error;
use crate::library::Library;
use crate::mechanism::{KeyFamily, SignMechanism};

/// The NIST curves the card signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// Bytes of one scalar; an ECDSA signature is twice this.
    pub(crate) fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// Recognises CKA_EC_PARAMS holding a named-curve OID.
    pub(crate) fn from_ec_params(params: &[u8]) -> Option<Curve> {
        const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
        const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
        match params {
            P256 => Some(Curve::P256),
            P384 => Some(Curve::P384),
            P521 => Some(Curve::P521),
            _ => None,
        }
    }
}

/// An Ed25519 signature is R || S, 32 bytes each (RFC 8032 §5.1.6).
pub(crate) const ED25519_SIGNATURE_LEN: usize = 64;

/// A key's attributes as far as signing or verifying cares.
#[derive(Debug, Default)]
pub(crate) struct KeyAttrs {
    pub class: Option<u64>,
    pub key_type: Option<u64>,
    pub usage: Option<bool>,
    pub allowed: Option<Vec<u64>>,
    pub modulus: Option<Vec<u8>>,
    pub public_exponent: Option<Vec<u8>>,
    pub ec_params: Option<Vec<u8>>,
    pub ec_point: Option<Vec<u8>>,
    /// CKA_ALWAYS_AUTHENTICATE (private keys only).
    pub always_authenticate: Option<bool>,
    /// CKA_TOKEN: only token objects are cached (session objects end with
    /// their session).
    pub token: Option<bool>,
}

/// Where a cached answer came from: the slot (handles are per slot), the
/// key, and the usage attribute asked for.
type CacheKey = (CK_SLOT_ID, CK_OBJECT_HANDLE, CK_ATTRIBUTE_TYPE);

/// Cached [`KeyAttrs`] of token keys; see the module docs for when entries
/// are dropped.
#[derive(Default)]
pub(crate) struct KeyCache {
    map: Mutex<HashMap<CacheKey, Arc<KeyAttrs>>>,
}

/// Enough for every key a signing server uses; past it the cache starts
/// over rather than grow without bound.
const KEY_CACHE_LIMIT: usize = 4096;

impl KeyCache {
    fn map(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<KeyAttrs>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key's attributes, from the cache or with one request.
    pub(crate) fn attrs(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        slot: CK_SLOT_ID,
        key: CK_OBJECT_HANDLE,
        usage: CK_ATTRIBUTE_TYPE,
    ) -> Result<Arc<KeyAttrs>, Error> {
        let cache_key = (slot, key, usage);
        if let Some(hit) = self.map().get(&cache_key) {
            return Ok(Arc::clone(hit));
        }
        let attrs = Arc::new(fetch(lib, session, key, usage)?);
        if attrs.token == Some(true) {
            let mut map = self.map();
            if map.len() >= KEY_CACHE_LIMIT {
                map.clear();
            }
            map.insert(cache_key, Arc::clone(&attrs));
        }
        Ok(attrs)
    }

    /// Drops what is known about `key` in every slot.
    pub(crate) fn forget(&self, key: CK_OBJECT_HANDLE) {
        self.map().retain(|(_, k, _), _| *k != key);
    }

    /// Drops everything known about keys of `slot`.
    pub(crate) fn forget_slot(&self, slot: CK_SLOT_ID) {
        self.map().retain(|(s, _, _), _| *s != slot);
    }
}

/// Fetches the attributes in one request; `usage` is CKA_SIGN or CKA_VERIFY.
pub(crate) fn fetch(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    usage: CK_ATTRIBUTE_TYPE,
) -> Result<KeyAttrs, Error> {
    let types = [
        CKA_CLASS,
        CKA_KEY_TYPE,
        usage,
        CKA_ALLOWED_MECHANISMS,
        CKA_MODULUS,
        CKA_PUBLIC_EXPONENT,
        CKA_EC_PARAMS,
        CKA_EC_POINT,
        CKA_ALWAYS_AUTHENTICATE,
        CKA_TOKEN,
    ];
    let request = RequestBody::GetAttributes {
        session,
        object: key,
        types: types.to_vec(),
    };
    let answers = match lib.daemon.call(request) {
        Ok(ReplyBody::Attributes(a)) if a.len() == types.len() => a,
        Ok(_) => return Err(Error::Transport),
        Err(Error::Daemon(CKR_OBJECT_HANDLE_INVALID)) => return Err(Error::KeyHandleInvalid(key)),
        Err(e) => return Err(e),
    };
    let values: Vec<Option<Vec<u8>>> = answers
        .into_iter()
        .map(|a| match a {
            AttributeValue::Value(v) => Some(v),
            AttributeValue::Sensitive | AttributeValue::Invalid => None,
        })
        .collect();
    let [class, key_type, usage, allowed, modulus, public_exponent, ec_params, ec_point, always, token]: [Option<
        Vec<u8>,
    >;
        10] = values.try_into().map_err(|_| Error::Transport)?;
    Ok(KeyAttrs {
        class: class.as_deref().and_then(attr::read_ulong),
        key_type: key_type.as_deref().and_then(attr::read_ulong),
        usage: usage.as_deref().and_then(attr::read_bool),
        allowed: allowed.as_deref().and_then(attr::read_ulong_array),
        modulus,
        public_exponent,
        ec_params,
        ec_point,
        always_authenticate: always.as_deref().and_then(attr::read_bool),
        token: token.as_deref().and_then(attr::read_bool),
    })
}

impl KeyAttrs {
    /// The checks every *Init makes: usage allowed, class and key type fit
    /// the mechanism, mechanism listed in CKA_ALLOWED_MECHANISMS (if set).
    pub(crate) fn check(
        &self,
        class: CK_OBJECT_CLASS,
        mechanism: &SignMechanism,
    ) -> Result<(), Error> {
        if self.usage != Some(true) {
            return Err(Error::KeyFunctionNotPermitted);
        }
        if self.class != Some(class) {
            return Err(Error::KeyTypeInconsistent);
        }
        let expected = match mechanism.family() {
            KeyFamily::Rsa => CKK_RSA,
            KeyFamily::Ec => CKK_EC,
            KeyFamily::Edwards => CKK_EC_EDWARDS,
        };
        if self.key_type != Some(expected) {
            return Err(Error::KeyTypeInconsistent);
        }
        match &self.allowed {
            Some(list) if !list.is_empty() && !list.contains(&mechanism.ty) => {
                Err(Error::MechanismInvalid(mechanism.ty))
            }
            _ => Ok(()),
        }
    }

    /// The modulus without leading zero bytes.
    pub(crate) fn modulus(&self) -> Result<&[u8], Error> {
        let m = self.modulus.as_deref().ok_or(Error::KeyTypeInconsistent)?;
        let m = strip_zeros(m);
        if m.is_empty() {
            return Err(Error::KeyTypeInconsistent);
        }
        Ok(m)
    }

    pub(crate) fn curve(&self) -> Result<Curve, Error> {
        self.ec_params
            .as_deref()
            .and_then(Curve::from_ec_params)
            .ok_or(Error::KeyTypeInconsistent)
    }

    /// The signature length for this key, from metadata alone.
    pub(crate) fn signature_len(&self, family: KeyFamily) -> Result<usize, Error> {
        match family {
            KeyFamily::Rsa => self.modulus().map(<[u8]>::len),
            KeyFamily::Ec => self.curve().map(|c| 2 * c.scalar_len()),
            KeyFamily::Edwards => self.ed25519_point().map(|_| ED25519_SIGNATURE_LEN),
        }
    }

    /// The 32-byte Ed25519 point from CKA_EC_POINT (a DER OCTET STRING
    /// around it, or the bare bytes), after checking that CKA_EC_PARAMS
    /// names Ed25519 (by OID or as the PrintableString "edwards25519").
    pub(crate) fn ed25519_point(&self) -> Result<&[u8], Error> {
        const OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
        const NAME: &[u8] = b"\x13\x0cedwards25519";
        if !matches!(self.ec_params.as_deref(), Some(OID | NAME)) {
            return Err(Error::KeyTypeInconsistent);
        }
        match self.ec_point.as_deref() {
            Some([0x04, 0x20, point @ ..]) if point.len() == 32 => Ok(point),
            Some(point) if point.len() == 32 => Ok(point),
            _ => Err(Error::KeyTypeInconsistent),
        }
    }
}

/// Big-endian integer bytes without leading zeros.
pub(crate) fn strip_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::SignKind;

    fn ec_key() -> KeyAttrs {
        KeyAttrs {
            class: Some(CKO_PRIVATE_KEY),
            key_type: Some(CKK_EC),
            usage: Some(true),
            ec_params: Some(vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
            ..Default::default()
        }
    }

    #[test]
    fn checks_usage_type_and_allowed_mechanisms() {
        let ecdsa = SignMechanism {
            ty: CKM_ECDSA,
            kind: SignKind::Ecdsa,
        };
        let rsa = SignMechanism {
            ty: CKM_RSA_PKCS,
            kind: SignKind::RsaPkcs,
        };
        let mut k = ec_key();
        assert_eq!(k.check(CKO_PRIVATE_KEY, &ecdsa), Ok(()));
        assert_eq!(k.signature_len(KeyFamily::Ec), Ok(96));
        assert_eq!(
            k.check(CKO_PRIVATE_KEY, &rsa),
            Err(Error::KeyTypeInconsistent)
        );
        assert_eq!(
            k.check(CKO_PUBLIC_KEY, &ecdsa),
            Err(Error::KeyTypeInconsistent)
        );
        k.allowed = Some(vec![CKM_ECDSA_SHA256]);
        assert_eq!(
            k.check(CKO_PRIVATE_KEY, &ecdsa),
            Err(Error::MechanismInvalid(CKM_ECDSA))
        );
        k.usage = Some(false);
        assert_eq!(
            k.check(CKO_PRIVATE_KEY, &ecdsa),
            Err(Error::KeyFunctionNotPermitted)
        );
    }

    #[test]
    fn ed25519_keys_need_edwards_params_and_a_32_byte_point() {
        let eddsa = SignMechanism {
            ty: CKM_EDDSA,
            kind: SignKind::Eddsa,
        };
        let mut der_point = vec![0x04, 0x20];
        der_point.extend_from_slice(&[9; 32]);
        let mut k = KeyAttrs {
            class: Some(CKO_PRIVATE_KEY),
            key_type: Some(CKK_EC_EDWARDS),
            usage: Some(true),
            ec_params: Some(b"\x13\x0cedwards25519".to_vec()),
            ec_point: Some(der_point),
            ..Default::default()
        };
        assert_eq!(k.check(CKO_PRIVATE_KEY, &eddsa), Ok(()));
        assert_eq!(k.signature_len(KeyFamily::Edwards), Ok(64));
        assert_eq!(k.ed25519_point(), Ok(&[9; 32][..]));
        k.ec_params = Some(vec![0x06, 0x03, 0x2b, 0x65, 0x70]);
        k.ec_point = Some(vec![8; 32]);
        assert_eq!(k.ed25519_point(), Ok(&[8; 32][..]));
        k.ec_point = Some(vec![8; 33]);
        assert_eq!(k.ed25519_point(), Err(Error::KeyTypeInconsistent));
        // Ed448 is not offered.
        k.ec_params = Some(b"\x13\x0aedwards448".to_vec());
        k.ec_point = Some(vec![8; 32]);
        assert_eq!(k.ed25519_point(), Err(Error::KeyTypeInconsistent));
        assert_eq!(
            ec_key().check(CKO_PRIVATE_KEY, &eddsa),
            Err(Error::KeyTypeInconsistent)
        );
    }

    #[test]
    fn rsa_length_comes_from_the_modulus() {
        let mut m = vec![0u8];
        m.extend(vec![0xc5; 256]);
        let k = KeyAttrs {
            modulus: Some(m),
            ..Default::default()
        };
        assert_eq!(k.signature_len(KeyFamily::Rsa), Ok(256));
        assert_eq!(
            Curve::from_ec_params(&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
            Some(Curve::P256)
        );
        assert_eq!(Curve::from_ec_params(&[0x06, 0x01, 0x00]), None);
    }
}
