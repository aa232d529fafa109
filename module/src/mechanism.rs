//! Which signing and digesting mechanisms the module understands, and the
//! checks on their parameters (PKCS#11 3.0 §2.1.14 and §2.3 for PSS).

use cryptoki_sys::*;
use mesign_proto::{HashAlg, SignScheme};

use crate::error::Error;
use crate::ffi::RawMechanism;

/// The family of key a mechanism needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyFamily {
    Rsa,
    Ec,
    /// CKK_EC_EDWARDS (Ed25519).
    Edwards,
}

/// Checked RSASSA-PSS parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pss {
    pub hash: HashAlg,
    pub mgf_hash: HashAlg,
    pub salt_len: u32,
}

/// A signature mechanism, used for both signing and verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignKind {
    /// CKM_RSA_PKCS: the input is (normally) a DigestInfo.
    RsaPkcs,
    /// CKM_SHAx_RSA_PKCS.
    RsaPkcsHashed(HashAlg),
    /// CKM_RSA_PKCS_PSS: the input is the digest.
    RsaPss(Pss),
    /// CKM_SHAx_RSA_PKCS_PSS.
    RsaPssHashed(Pss),
    /// CKM_ECDSA: the input is a hash of any length.
    Ecdsa,
    /// CKM_ECDSA_SHAx.
    EcdsaHashed(HashAlg),
    /// CKM_EDDSA, pure Ed25519: the whole message goes to the card.
    Eddsa,
}

/// A signature mechanism with its type as the application named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignMechanism {
    pub ty: CK_MECHANISM_TYPE,
    pub kind: SignKind,
}

impl SignMechanism {
    pub(crate) fn family(&self) -> KeyFamily {
        match self.kind {
            SignKind::RsaPkcs
            | SignKind::RsaPkcsHashed(_)
            | SignKind::RsaPss(_)
            | SignKind::RsaPssHashed(_) => KeyFamily::Rsa,
            SignKind::Ecdsa | SignKind::EcdsaHashed(_) => KeyFamily::Ec,
            SignKind::Eddsa => KeyFamily::Edwards,
        }
    }

    /// The hash the module computes over the data, for hash-and-sign
    /// mechanisms (which are the only multi-part ones).
    pub(crate) fn module_hash(&self) -> Option<HashAlg> {
        match self.kind {
            SignKind::RsaPkcsHashed(h) | SignKind::EcdsaHashed(h) => Some(h),
            SignKind::RsaPssHashed(p) => Some(p.hash),
            SignKind::RsaPkcs | SignKind::RsaPss(_) | SignKind::Ecdsa | SignKind::Eddsa => None,
        }
    }

    /// How the card is to sign the (possibly hashed) input.
    pub(crate) fn scheme(&self) -> SignScheme {
        match self.kind {
            SignKind::RsaPkcs => SignScheme::RsaPkcs1DigestInfo,
            SignKind::RsaPkcsHashed(h) => SignScheme::RsaPkcs1(h),
            SignKind::RsaPss(p) | SignKind::RsaPssHashed(p) => SignScheme::RsaPss {
                hash: p.hash,
                mgf_hash: p.mgf_hash,
                salt_len: p.salt_len,
            },
            SignKind::Ecdsa | SignKind::EcdsaHashed(_) => SignScheme::Ecdsa,
            SignKind::Eddsa => SignScheme::Ed25519,
        }
    }
}

/// The hash named by a CKM_SHA* digest mechanism.
pub(crate) fn hash_of_mechanism(ty: CK_MECHANISM_TYPE) -> Option<HashAlg> {
    Some(match ty {
        CKM_SHA_1 => HashAlg::Sha1,
        CKM_SHA224 => HashAlg::Sha224,
        CKM_SHA256 => HashAlg::Sha256,
        CKM_SHA384 => HashAlg::Sha384,
        CKM_SHA512 => HashAlg::Sha512,
        _ => return None,
    })
}

fn hash_of_mgf(mgf: CK_RSA_PKCS_MGF_TYPE) -> Option<HashAlg> {
    Some(match mgf {
        CKG_MGF1_SHA1 => HashAlg::Sha1,
        CKG_MGF1_SHA224 => HashAlg::Sha224,
        CKG_MGF1_SHA256 => HashAlg::Sha256,
        CKG_MGF1_SHA384 => HashAlg::Sha384,
        CKG_MGF1_SHA512 => HashAlg::Sha512,
        _ => return None,
    })
}

/// Checks `CK_RSA_PKCS_PSS_PARAMS`: exact size, known hash and MGF, and for
/// the hash-and-sign variants the hash the mechanism names.
fn pss(raw: &RawMechanism, required_hash: Option<HashAlg>) -> Result<Pss, Error> {
    let invalid = Error::MechanismParamInvalid(raw.ty);
    let p = raw.pss_params()?;
    let hash = hash_of_mechanism(p.hashAlg).ok_or(invalid)?;
    let mgf_hash = hash_of_mgf(p.mgf).ok_or(invalid)?;
    let salt_len = u32::try_from(p.sLen).map_err(|_| invalid)?;
    if required_hash.is_some_and(|h| h != hash) {
        return Err(invalid);
    }
    Ok(Pss {
        hash,
        mgf_hash,
        salt_len,
    })
}

/// Parses a signature mechanism and its parameter.
pub(crate) fn sign_mechanism(raw: &RawMechanism) -> Result<SignMechanism, Error> {
    let kind = match raw.ty {
        CKM_RSA_PKCS_PSS => SignKind::RsaPss(pss(raw, None)?),
        CKM_SHA1_RSA_PKCS_PSS => SignKind::RsaPssHashed(pss(raw, Some(HashAlg::Sha1))?),
        CKM_SHA224_RSA_PKCS_PSS => SignKind::RsaPssHashed(pss(raw, Some(HashAlg::Sha224))?),
        CKM_SHA256_RSA_PKCS_PSS => SignKind::RsaPssHashed(pss(raw, Some(HashAlg::Sha256))?),
        CKM_SHA384_RSA_PKCS_PSS => SignKind::RsaPssHashed(pss(raw, Some(HashAlg::Sha384))?),
        CKM_SHA512_RSA_PKCS_PSS => SignKind::RsaPssHashed(pss(raw, Some(HashAlg::Sha512))?),
        // aws-lc-rs signs and verifies pure Ed25519 only: Ed25519ph and
        // Ed25519ctx are refused rather than answered with another scheme.
        CKM_EDDSA if raw.eddsa_variant_requested()? => {
            return Err(Error::MechanismParamInvalid(raw.ty))
        }
        CKM_EDDSA => SignKind::Eddsa,
        ty => {
            let kind = match ty {
                CKM_RSA_PKCS => SignKind::RsaPkcs,
                CKM_SHA1_RSA_PKCS => SignKind::RsaPkcsHashed(HashAlg::Sha1),
                CKM_SHA224_RSA_PKCS => SignKind::RsaPkcsHashed(HashAlg::Sha224),
                CKM_SHA256_RSA_PKCS => SignKind::RsaPkcsHashed(HashAlg::Sha256),
                CKM_SHA384_RSA_PKCS => SignKind::RsaPkcsHashed(HashAlg::Sha384),
                CKM_SHA512_RSA_PKCS => SignKind::RsaPkcsHashed(HashAlg::Sha512),
                CKM_ECDSA => SignKind::Ecdsa,
                CKM_ECDSA_SHA1 => SignKind::EcdsaHashed(HashAlg::Sha1),
                CKM_ECDSA_SHA224 => SignKind::EcdsaHashed(HashAlg::Sha224),
                CKM_ECDSA_SHA256 => SignKind::EcdsaHashed(HashAlg::Sha256),
                CKM_ECDSA_SHA384 => SignKind::EcdsaHashed(HashAlg::Sha384),
                CKM_ECDSA_SHA512 => SignKind::EcdsaHashed(HashAlg::Sha512),
                _ => return Err(Error::MechanismInvalid(ty)),
            };
            raw.no_parameter()?;
            kind
        }
    };
    Ok(SignMechanism { ty: raw.ty, kind })
}

/// Parses a digest mechanism (no parameter).
pub(crate) fn digest_mechanism(raw: &RawMechanism) -> Result<HashAlg, Error> {
    let hash = hash_of_mechanism(raw.ty).ok_or(Error::MechanismInvalid(raw.ty))?;
    raw.no_parameter()?;
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    fn pss_raw(ty: CK_MECHANISM_TYPE, p: &CK_RSA_PKCS_PSS_PARAMS) -> RawMechanism {
        RawMechanism::from_parts(
            ty,
            (p as *const CK_RSA_PKCS_PSS_PARAMS).cast(),
            size_of::<CK_RSA_PKCS_PSS_PARAMS>(),
        )
    }

    #[test]
    fn pss_parameters_are_value_checked() {
        let good = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            sLen: 32,
        };
        let m = sign_mechanism(&pss_raw(CKM_SHA256_RSA_PKCS_PSS, &good)).unwrap();
        assert_eq!(m.module_hash(), Some(HashAlg::Sha256));
        assert_eq!(
            m.scheme(),
            SignScheme::RsaPss {
                hash: HashAlg::Sha256,
                mgf_hash: HashAlg::Sha256,
                salt_len: 32
            }
        );

        let wrong_hash = sign_mechanism(&pss_raw(CKM_SHA384_RSA_PKCS_PSS, &good));
        assert_eq!(
            wrong_hash.unwrap_err(),
            Error::MechanismParamInvalid(CKM_SHA384_RSA_PKCS_PSS)
        );
        let bad_mgf = CK_RSA_PKCS_PSS_PARAMS { mgf: 0x99, ..good };
        assert!(sign_mechanism(&pss_raw(CKM_RSA_PKCS_PSS, &bad_mgf)).is_err());
        let bad_hash = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: CKM_MD5,
            ..good
        };
        assert!(sign_mechanism(&pss_raw(CKM_RSA_PKCS_PSS, &bad_hash)).is_err());
        let missing = RawMechanism::from_parts(CKM_RSA_PKCS_PSS, ptr::null(), 0);
        assert_eq!(
            sign_mechanism(&missing).unwrap_err(),
            Error::MechanismParamInvalid(CKM_RSA_PKCS_PSS)
        );
    }

    #[test]
    fn eddsa_is_pure_ed25519_only() {
        let raw = |p: Option<&CK_EDDSA_PARAMS>, len| {
            RawMechanism::from_parts(
                CKM_EDDSA,
                p.map_or(ptr::null(), |p| (p as *const CK_EDDSA_PARAMS).cast()),
                len,
            )
        };
        let size = size_of::<CK_EDDSA_PARAMS>();
        let none = sign_mechanism(&raw(None, 0)).unwrap();
        assert_eq!(none.kind, SignKind::Eddsa);
        assert_eq!(none.family(), KeyFamily::Edwards);
        assert_eq!(none.module_hash(), None);
        assert_eq!(none.scheme(), SignScheme::Ed25519);
        let mut context = *b"ctx";
        let pure = CK_EDDSA_PARAMS {
            phFlag: CK_FALSE,
            ulContextDataLen: 0,
            pContextData: ptr::null_mut(),
        };
        assert_eq!(sign_mechanism(&raw(Some(&pure), size)).unwrap(), none);
        let invalid = Err(Error::MechanismParamInvalid(CKM_EDDSA));
        let prehash = CK_EDDSA_PARAMS {
            phFlag: CK_TRUE,
            ..pure
        };
        assert_eq!(sign_mechanism(&raw(Some(&prehash), size)), invalid);
        let with_context = CK_EDDSA_PARAMS {
            ulContextDataLen: 3,
            pContextData: context.as_mut_ptr(),
            ..pure
        };
        assert_eq!(sign_mechanism(&raw(Some(&with_context), size)), invalid);
        assert_eq!(sign_mechanism(&raw(Some(&pure), size - 1)), invalid);
        assert_eq!(sign_mechanism(&raw(None, size)), invalid);
    }

    #[test]
    fn parameterless_mechanisms_refuse_parameters() {
        let good = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            sLen: 32,
        };
        assert_eq!(
            sign_mechanism(&pss_raw(CKM_ECDSA, &good)).unwrap_err(),
            Error::MechanismParamInvalid(CKM_ECDSA)
        );
        let m =
            sign_mechanism(&RawMechanism::from_parts(CKM_ECDSA_SHA384, ptr::null(), 0)).unwrap();
        assert_eq!(m.family(), KeyFamily::Ec);
        assert_eq!(m.module_hash(), Some(HashAlg::Sha384));
        let unknown = RawMechanism::from_parts(CKM_AES_CBC, ptr::null(), 0);
        assert_eq!(
            sign_mechanism(&unknown).unwrap_err(),
            Error::MechanismInvalid(CKM_AES_CBC)
        );
        assert_eq!(
            digest_mechanism(&RawMechanism::from_parts(CKM_SHA512, ptr::null(), 0)),
            Ok(HashAlg::Sha512)
        );
        assert!(digest_mechanism(&RawMechanism::from_parts(CKM_MD5, ptr::null(), 0)).is_err());
    }
}
