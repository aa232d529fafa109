//! The RSA encryption mechanisms, CKM_RSA_PKCS and CKM_RSA_PKCS_OAEP
//! (PKCS#11 3.0 §2.1.6, §2.1.8): parsing and checking their parameters,
//! and the key checks C_EncryptInit and C_DecryptInit share.
//!
//! OAEP takes SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 as the label
//! hash and as the MGF1 hash, in any combination, and any label. The four
//! pairs aws-lc-rs offers (MGF1 over the label hash, not SHA-224) encrypt
//! here in the module; the others encrypt on the card (see
//! [`crate::encrypt`]). The card decrypts all of them. No padding is
//! written by hand anywhere.

use aws_lc_rs::rsa::{
    OaepAlgorithm, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384,
    OAEP_SHA512_MGF1SHA512,
};
use cryptoki_sys::*;
use mesign_proto::{DecryptScheme, HashAlg};

use crate::error::Error;
use crate::ffi::RawMechanism;
use crate::key_info::KeyAttrs;
use crate::mechanism::hash_of_mechanism;

/// PKCS#1 v1.5 encryption padding takes at least 11 bytes of the block.
const PKCS1_OVERHEAD: usize = 11;

/// A checked encryption mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Crypt {
    /// CKM_RSA_PKCS.
    Pkcs1,
    /// CKM_RSA_PKCS_OAEP: the label hash, the MGF1 hash and the label.
    Oaep {
        hash: HashAlg,
        mgf_hash: HashAlg,
        label: Vec<u8>,
    },
}

impl Crypt {
    pub(crate) fn ty(&self) -> CK_MECHANISM_TYPE {
        match self {
            Crypt::Pkcs1 => CKM_RSA_PKCS,
            Crypt::Oaep { .. } => CKM_RSA_PKCS_OAEP,
        }
    }

    /// The longest message one block of `block_len` bytes carries; also
    /// the answer to a C_Decrypt length query.
    pub(crate) fn max_message_len(&self, block_len: usize) -> usize {
        let overhead = match self {
            Crypt::Pkcs1 => PKCS1_OVERHEAD,
            Crypt::Oaep { hash, .. } => 2 * hash.len() + 2,
        };
        block_len.saturating_sub(overhead)
    }

    /// The aws-lc-rs OAEP algorithm for encryption in the module, if
    /// aws-lc-rs offers the pair; `None` sends the encryption to the card.
    pub(crate) fn oaep_algorithm(
        hash: HashAlg,
        mgf_hash: HashAlg,
    ) -> Option<&'static OaepAlgorithm> {
        match (hash, mgf_hash) {
            (HashAlg::Sha1, HashAlg::Sha1) => Some(&OAEP_SHA1_MGF1SHA1),
            (HashAlg::Sha256, HashAlg::Sha256) => Some(&OAEP_SHA256_MGF1SHA256),
            (HashAlg::Sha384, HashAlg::Sha384) => Some(&OAEP_SHA384_MGF1SHA384),
            (HashAlg::Sha512, HashAlg::Sha512) => Some(&OAEP_SHA512_MGF1SHA512),
            _ => None,
        }
    }

    /// How the card is to decrypt.
    pub(crate) fn scheme(&self) -> DecryptScheme {
        match self {
            Crypt::Pkcs1 => DecryptScheme::RsaPkcs1,
            Crypt::Oaep {
                hash,
                mgf_hash,
                label,
            } => DecryptScheme::RsaOaep {
                hash: *hash,
                mgf_hash: *mgf_hash,
                label: label.clone(),
            },
        }
    }
}

/// Parses an encryption mechanism and checks its parameter: none for
/// CKM_RSA_PKCS; for OAEP exactly a `CK_RSA_PKCS_OAEP_PARAMS`, a SHA-1 or
/// SHA-2 label hash, a CKG_MGF1_SHA* MGF (either may differ from the
/// other), and source CKZ_DATA_SPECIFIED (or 0 with no label, which
/// pkcs11-tool sends).
pub(crate) fn crypt_mechanism(raw: &RawMechanism) -> Result<Crypt, Error> {
    match raw.ty {
        CKM_RSA_PKCS => {
            raw.no_parameter()?;
            Ok(Crypt::Pkcs1)
        }
        CKM_RSA_PKCS_OAEP => {
            let invalid = Error::MechanismParamInvalid(raw.ty);
            let p = raw.oaep_params()?;
            let hash = hash_of_mechanism(p.hash_alg).ok_or(invalid)?;
            let mgf_hash = match p.mgf {
                CKG_MGF1_SHA1 => HashAlg::Sha1,
                CKG_MGF1_SHA224 => HashAlg::Sha224,
                CKG_MGF1_SHA256 => HashAlg::Sha256,
                CKG_MGF1_SHA384 => HashAlg::Sha384,
                CKG_MGF1_SHA512 => HashAlg::Sha512,
                _ => return Err(invalid),
            };
            let source_ok = p.source == CKZ_DATA_SPECIFIED || (p.source == 0 && p.label.is_empty());
            if !source_ok {
                return Err(invalid);
            }
            Ok(Crypt::Oaep {
                hash,
                mgf_hash,
                label: p.label,
            })
        }
        ty => Err(Error::MechanismInvalid(ty)),
    }
}

/// The checks C_EncryptInit / C_DecryptInit make on the key: the usage
/// attribute fetched (CKA_ENCRYPT or CKA_DECRYPT) is true, the class is
/// `class`, the key is RSA, and the mechanism is in CKA_ALLOWED_MECHANISMS
/// if that is set. Returns the block (modulus) length.
pub(crate) fn check_key(
    attrs: &KeyAttrs,
    class: CK_OBJECT_CLASS,
    mechanism: CK_MECHANISM_TYPE,
) -> Result<usize, Error> {
    if attrs.usage != Some(true) {
        return Err(Error::KeyFunctionNotPermitted);
    }
    if attrs.class != Some(class) || attrs.key_type != Some(CKK_RSA) {
        return Err(Error::KeyTypeInconsistent);
    }
    if let Some(list) = &attrs.allowed {
        if !list.is_empty() && !list.contains(&mechanism) {
            return Err(Error::MechanismInvalid(mechanism));
        }
    }
    attrs.modulus().map(<[u8]>::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oaep(hash_alg: u64, mgf: u64, source: u64, label: &[u8]) -> Result<Crypt, Error> {
        let p = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: hash_alg,
            mgf,
            source,
            pSourceData: if label.is_empty() {
                std::ptr::null_mut()
            } else {
                // The module only reads the label.
                label.as_ptr().cast_mut().cast()
            },
            ulSourceDataLen: label.len() as u64,
        };
        crypt_mechanism(&RawMechanism::from_parts(
            CKM_RSA_PKCS_OAEP,
            (&p as *const CK_RSA_PKCS_OAEP_PARAMS).cast(),
            size_of::<CK_RSA_PKCS_OAEP_PARAMS>(),
        ))
    }

    #[test]
    fn oaep_parameters_are_value_checked() {
        let ok = oaep(CKM_SHA384, CKG_MGF1_SHA384, CKZ_DATA_SPECIFIED, b"l").unwrap();
        assert_eq!(ok.max_message_len(256), 256 - 98);
        assert_eq!(
            ok.scheme(),
            DecryptScheme::RsaOaep {
                hash: HashAlg::Sha384,
                mgf_hash: HashAlg::Sha384,
                label: b"l".to_vec()
            }
        );
        assert!(oaep(CKM_SHA_1, CKG_MGF1_SHA1, 0, &[]).is_ok());
        // Every SHA-1/SHA-2 pair is accepted; only the four aws-lc-rs
        // offers encrypt in the module.
        let hashes = [
            (CKM_SHA_1, CKG_MGF1_SHA1, HashAlg::Sha1),
            (CKM_SHA224, CKG_MGF1_SHA224, HashAlg::Sha224),
            (CKM_SHA256, CKG_MGF1_SHA256, HashAlg::Sha256),
            (CKM_SHA384, CKG_MGF1_SHA384, HashAlg::Sha384),
            (CKM_SHA512, CKG_MGF1_SHA512, HashAlg::Sha512),
        ];
        for (hash_alg, _, hash) in hashes {
            for (_, mgf, mgf_hash) in hashes {
                let crypt = oaep(hash_alg, mgf, CKZ_DATA_SPECIFIED, b"").unwrap();
                assert_eq!(
                    crypt.scheme(),
                    DecryptScheme::RsaOaep {
                        hash,
                        mgf_hash,
                        label: vec![]
                    }
                );
                let in_module = Crypt::oaep_algorithm(hash, mgf_hash).is_some();
                assert_eq!(
                    in_module,
                    hash == mgf_hash && hash != HashAlg::Sha224,
                    "{hash:?} {mgf_hash:?}"
                );
            }
        }
        let invalid = Err(Error::MechanismParamInvalid(CKM_RSA_PKCS_OAEP));
        for (hash, mgf, source, label) in [
            (CKM_MD5, CKG_MGF1_SHA1, CKZ_DATA_SPECIFIED, &[][..]),
            (CKM_SHA256, 0x99, CKZ_DATA_SPECIFIED, &[]),
            (CKM_SHA256, CKG_MGF1_SHA256, 7, &[]),
            (CKM_SHA256, CKG_MGF1_SHA256, 0, b"label"),
        ] {
            assert_eq!(
                oaep(hash, mgf, source, label),
                invalid,
                "{hash:#x} {mgf:#x}"
            );
        }
        let missing = RawMechanism::from_parts(CKM_RSA_PKCS_OAEP, std::ptr::null(), 0);
        assert_eq!(crypt_mechanism(&missing), invalid);
        let pkcs1 = crypt_mechanism(&RawMechanism::from_parts(CKM_RSA_PKCS, std::ptr::null(), 0));
        assert_eq!(pkcs1.unwrap().max_message_len(256), 245);
        let other = RawMechanism::from_parts(CKM_RSA_X_509, std::ptr::null(), 0);
        assert_eq!(
            crypt_mechanism(&other),
            Err(Error::MechanismInvalid(CKM_RSA_X_509))
        );
    }

    #[test]
    fn key_checks() {
        let mut k = KeyAttrs {
            class: Some(CKO_PUBLIC_KEY),
            key_type: Some(CKK_RSA),
            usage: Some(true),
            modulus: Some(vec![0xc1; 256]),
            ..Default::default()
        };
        assert_eq!(check_key(&k, CKO_PUBLIC_KEY, CKM_RSA_PKCS), Ok(256));
        assert_eq!(
            check_key(&k, CKO_PRIVATE_KEY, CKM_RSA_PKCS),
            Err(Error::KeyTypeInconsistent)
        );
        k.allowed = Some(vec![CKM_RSA_PKCS_OAEP]);
        assert_eq!(
            check_key(&k, CKO_PUBLIC_KEY, CKM_RSA_PKCS),
            Err(Error::MechanismInvalid(CKM_RSA_PKCS))
        );
        k.usage = Some(false);
        assert_eq!(
            check_key(&k, CKO_PUBLIC_KEY, CKM_RSA_PKCS_OAEP),
            Err(Error::KeyFunctionNotPermitted)
        );
    }
}
