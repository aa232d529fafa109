//! The mechanisms the daemon offers and the rules tying a signing or
//! decryption mechanism to the scheme the module sends and to the key it
//! uses.

use cryptoki_sys::*;
use mesign_proto::{DecryptScheme, HashAlg, MechanismInfo, SignScheme, MAX_EDDSA_MESSAGE};
use pci_driver_shim::command::{self as card, KeySpec};

use crate::error::HsmError;

const EC_FLAGS: u64 = CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;

/// The answer to C_GetMechanismList / C_GetMechanismInfo.
pub fn mechanism_list() -> Vec<MechanismInfo> {
    let info = |mechanism, min_key_size, max_key_size, flags| MechanismInfo {
        mechanism,
        min_key_size,
        max_key_size,
        flags,
    };
    let rsa_sign = CKF_SIGN | CKF_VERIFY | CKF_HW;
    // Encryption runs in the module with the public key, decryption on
    // the card; CKM_RSA_PKCS does both kinds of work.
    let rsa_crypt = CKF_ENCRYPT | CKF_DECRYPT | CKF_HW;
    let ec_sign = CKF_SIGN | CKF_VERIFY | CKF_HW | EC_FLAGS;
    vec![
        info(
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            2048,
            4096,
            CKF_GENERATE_KEY_PAIR | CKF_HW,
        ),
        info(
            CKM_EC_KEY_PAIR_GEN,
            256,
            521,
            CKF_GENERATE_KEY_PAIR | CKF_HW | EC_FLAGS,
        ),
        info(CKM_RSA_PKCS, 2048, 4096, rsa_sign | rsa_crypt),
        // OAEP also wraps secret keys (the card does both halves).
        info(
            CKM_RSA_PKCS_OAEP,
            2048,
            4096,
            rsa_crypt | CKF_WRAP | CKF_UNWRAP,
        ),
        info(CKM_RSA_PKCS_PSS, 2048, 4096, rsa_sign),
        info(CKM_SHA256_RSA_PKCS, 2048, 4096, rsa_sign),
        info(CKM_SHA384_RSA_PKCS, 2048, 4096, rsa_sign),
        info(CKM_SHA512_RSA_PKCS, 2048, 4096, rsa_sign),
        info(CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, rsa_sign),
        info(CKM_SHA384_RSA_PKCS_PSS, 2048, 4096, rsa_sign),
        info(CKM_SHA512_RSA_PKCS_PSS, 2048, 4096, rsa_sign),
        info(CKM_ECDSA, 256, 521, ec_sign),
        info(CKM_ECDSA_SHA256, 256, 521, ec_sign),
        info(CKM_ECDSA_SHA384, 256, 521, ec_sign),
        info(CKM_ECDSA_SHA512, 256, 521, ec_sign),
        // ECDH on the card (CKD_NULL and the X9.63 SHA-2 KDFs).
        info(CKM_ECDH1_DERIVE, 256, 521, CKF_DERIVE | CKF_HW | EC_FLAGS),
        // Ed25519 only; 256 bits as SoftHSMv2 and OpenSSL count its keys.
        info(
            CKM_EC_EDWARDS_KEY_PAIR_GEN,
            256,
            256,
            CKF_GENERATE_KEY_PAIR | CKF_HW,
        ),
        info(CKM_EDDSA, 256, 256, CKF_SIGN | CKF_VERIFY | CKF_HW),
        // Secret keys on the card: AES sizes in bytes (PKCS#11's
        // convention for AES), generic secret generation in bits (its
        // convention), HMAC key sizes in bytes as SoftHSMv2 reports them.
        info(CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE | CKF_HW),
        info(CKM_GENERIC_SECRET_KEY_GEN, 8, 512, CKF_GENERATE | CKF_HW),
        info(CKM_AES_GCM, 16, 32, CKF_ENCRYPT | CKF_DECRYPT | CKF_HW),
        info(CKM_AES_CBC_PAD, 16, 32, CKF_ENCRYPT | CKF_DECRYPT | CKF_HW),
        info(CKM_AES_CTR, 16, 32, CKF_ENCRYPT | CKF_DECRYPT | CKF_HW),
        info(CKM_AES_CMAC, 16, 32, CKF_SIGN | CKF_VERIFY | CKF_HW),
        info(CKM_SHA256_HMAC, 1, 64, CKF_SIGN | CKF_VERIFY | CKF_HW),
        info(CKM_SHA384_HMAC, 1, 64, CKF_SIGN | CKF_VERIFY | CKF_HW),
        info(CKM_SHA512_HMAC, 1, 64, CKF_SIGN | CKF_VERIFY | CKF_HW),
        // Key wrapping on the card (RFC 3394; RFC 5649 under both names).
        // AES-128 and AES-256 wrapping keys only: aws-lc-rs has no
        // AES-192 key wrap.
        info(CKM_AES_KEY_WRAP, 16, 32, CKF_WRAP | CKF_UNWRAP | CKF_HW),
        info(CKM_AES_KEY_WRAP_PAD, 16, 32, CKF_WRAP | CKF_UNWRAP | CKF_HW),
        info(CKM_AES_KEY_WRAP_KWP, 16, 32, CKF_WRAP | CKF_UNWRAP | CKF_HW),
        info(CKM_SHA_1, 0, 0, CKF_DIGEST),
        info(CKM_SHA224, 0, 0, CKF_DIGEST),
        info(CKM_SHA256, 0, 0, CKF_DIGEST),
        info(CKM_SHA384, 0, 0, CKF_DIGEST),
        info(CKM_SHA512, 0, 0, CKF_DIGEST),
    ]
}

/// Longest input accepted for raw CKM_ECDSA (a SHA-512 digest is 64 bytes;
/// longer "hashes" are truncated by the card, but nobody sends them).
const MAX_ECDSA_INPUT: usize = 1024;

/// Checks that `scheme` and `input` fit signing `mechanism` with a key of
/// `spec`, and returns the card's scheme.
pub fn sign_scheme(
    mechanism: u64,
    scheme: SignScheme,
    spec: KeySpec,
    input_len: usize,
) -> Result<card::SignScheme, HsmError> {
    let hash_of = |m| match m {
        CKM_SHA256_RSA_PKCS | CKM_SHA256_RSA_PKCS_PSS | CKM_ECDSA_SHA256 => Some(HashAlg::Sha256),
        CKM_SHA384_RSA_PKCS | CKM_SHA384_RSA_PKCS_PSS | CKM_ECDSA_SHA384 => Some(HashAlg::Sha384),
        CKM_SHA512_RSA_PKCS | CKM_SHA512_RSA_PKCS_PSS | CKM_ECDSA_SHA512 => Some(HashAlg::Sha512),
        _ => None,
    };
    let rsa = matches!(
        mechanism,
        CKM_RSA_PKCS
            | CKM_RSA_PKCS_PSS
            | CKM_SHA256_RSA_PKCS
            | CKM_SHA384_RSA_PKCS
            | CKM_SHA512_RSA_PKCS
            | CKM_SHA256_RSA_PKCS_PSS
            | CKM_SHA384_RSA_PKCS_PSS
            | CKM_SHA512_RSA_PKCS_PSS
    );
    let ec = matches!(
        mechanism,
        CKM_ECDSA | CKM_ECDSA_SHA256 | CKM_ECDSA_SHA384 | CKM_ECDSA_SHA512
    );
    if mechanism == CKM_EDDSA {
        return eddsa_scheme(scheme, spec, input_len);
    }
    if !rsa && !ec {
        return Err(HsmError::MechanismInvalid(mechanism));
    }
    let modulus_len = match spec {
        KeySpec::Rsa { bits } if rsa => bits as usize / 8,
        KeySpec::Ec(_) if ec => 0,
        _ => return Err(HsmError::KeyTypeInconsistent),
    };
    let digest_len = |hash: HashAlg| {
        if input_len == hash.len() {
            Ok(())
        } else {
            Err(HsmError::DataLenRange(input_len))
        }
    };
    match (mechanism, scheme) {
        (CKM_RSA_PKCS, SignScheme::RsaPkcs1DigestInfo) => {
            // PKCS#1 v1.5 padding needs at least 11 bytes.
            if input_len == 0 || input_len + 11 > modulus_len {
                return Err(HsmError::DataLenRange(input_len));
            }
            Ok(card::SignScheme::RsaPkcs1DigestInfo)
        }
        (m, SignScheme::RsaPkcs1(hash)) if rsa && m != CKM_RSA_PKCS && m != CKM_RSA_PKCS_PSS => {
            if hash_of(m) != Some(hash) {
                return Err(HsmError::ArgumentsBad);
            }
            digest_len(hash)?;
            Ok(card::SignScheme::RsaPkcs1(card_hash(hash)))
        }
        (
            m,
            SignScheme::RsaPss {
                hash,
                mgf_hash,
                salt_len,
            },
        ) if m == CKM_RSA_PKCS_PSS || (rsa && hash_of(m).is_some()) => {
            if m != CKM_RSA_PKCS_PSS && hash_of(m) != Some(hash) {
                return Err(HsmError::MechanismParamInvalid);
            }
            // EMSA-PSS needs emLen >= hLen + sLen + 2.
            if salt_len as usize + hash.len() + 2 > modulus_len {
                return Err(HsmError::MechanismParamInvalid);
            }
            digest_len(hash)?;
            Ok(card::SignScheme::RsaPss {
                hash: card_hash(hash),
                mgf_hash: card_hash(mgf_hash),
                salt_len,
            })
        }
        (CKM_ECDSA, SignScheme::Ecdsa) => {
            if input_len == 0 || input_len > MAX_ECDSA_INPUT {
                return Err(HsmError::DataLenRange(input_len));
            }
            Ok(card::SignScheme::Ecdsa)
        }
        (m, SignScheme::Ecdsa) if ec => {
            digest_len(hash_of(m).expect("hashed ECDSA mechanisms name a hash"))?;
            Ok(card::SignScheme::Ecdsa)
        }
        // The module sent a scheme that does not belong to the mechanism.
        _ => Err(HsmError::ArgumentsBad),
    }
}

/// CKM_EDDSA: pure Ed25519 over the whole message, which must fit a card
/// data slot.
fn eddsa_scheme(
    scheme: SignScheme,
    spec: KeySpec,
    input_len: usize,
) -> Result<card::SignScheme, HsmError> {
    if spec != KeySpec::Ed25519 {
        return Err(HsmError::KeyTypeInconsistent);
    }
    if scheme != SignScheme::Ed25519 {
        return Err(HsmError::ArgumentsBad);
    }
    if input_len > MAX_EDDSA_MESSAGE {
        return Err(HsmError::DataLenRange(input_len));
    }
    Ok(card::SignScheme::Ed25519)
}

/// Checks that `scheme` fits decrypting with `mechanism` and a key of
/// `spec` and that the ciphertext is one block; returns the card's scheme.
/// OAEP takes any of SHA-1/224/256/384/512 for the label hash and for
/// MGF1, in any combination.
pub fn decrypt_scheme(
    mechanism: u64,
    scheme: &DecryptScheme,
    spec: KeySpec,
    input_len: usize,
) -> Result<card::DecryptScheme, HsmError> {
    if !matches!(mechanism, CKM_RSA_PKCS | CKM_RSA_PKCS_OAEP) {
        return Err(HsmError::MechanismInvalid(mechanism));
    }
    let KeySpec::Rsa { bits } = spec else {
        return Err(HsmError::KeyTypeInconsistent);
    };
    let card_scheme = match (mechanism, scheme) {
        (CKM_RSA_PKCS, DecryptScheme::RsaPkcs1) => card::DecryptScheme::RsaPkcs1,
        (
            CKM_RSA_PKCS_OAEP,
            DecryptScheme::RsaOaep {
                hash,
                mgf_hash,
                label,
            },
        ) => card::DecryptScheme::RsaOaep {
            hash: card_hash(*hash),
            mgf_hash: card_hash(*mgf_hash),
            label: label.clone(),
        },
        // The module sent a scheme that does not belong to the mechanism.
        _ => return Err(HsmError::ArgumentsBad),
    };
    if input_len != bits as usize / 8 {
        return Err(HsmError::EncryptedDataLenRange(input_len));
    }
    Ok(card_scheme)
}

/// The card's OAEP parameters (label hash, MGF1 hash, label) for an
/// encryption the card does (`RequestBody::OaepEncrypt`).
pub fn oaep_encrypt_params(
    scheme: &DecryptScheme,
) -> Result<(card::Hash, card::Hash, Vec<u8>), HsmError> {
    match scheme {
        DecryptScheme::RsaOaep {
            hash,
            mgf_hash,
            label,
        } => Ok((card_hash(*hash), card_hash(*mgf_hash), label.clone())),
        DecryptScheme::RsaPkcs1 => Err(HsmError::ArgumentsBad),
    }
}

fn card_hash(hash: HashAlg) -> card::Hash {
    match hash {
        HashAlg::Sha1 => card::Hash::Sha1,
        HashAlg::Sha224 => card::Hash::Sha224,
        HashAlg::Sha256 => card::Hash::Sha256,
        HashAlg::Sha384 => card::Hash::Sha384,
        HashAlg::Sha512 => card::Hash::Sha512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pci_driver_shim::command::Curve;

    const RSA: KeySpec = KeySpec::Rsa { bits: 2048 };
    const EC: KeySpec = KeySpec::Ec(Curve::P256);

    fn rv(r: Result<card::SignScheme, HsmError>) -> u64 {
        r.expect_err("expected an error").rv()
    }

    #[test]
    fn matching_schemes_pass() {
        let pkcs1 = SignScheme::RsaPkcs1(HashAlg::Sha256);
        assert_eq!(
            sign_scheme(CKM_SHA256_RSA_PKCS, pkcs1, RSA, 32).unwrap(),
            card::SignScheme::RsaPkcs1(card::Hash::Sha256)
        );
        assert!(sign_scheme(CKM_RSA_PKCS, SignScheme::RsaPkcs1DigestInfo, RSA, 51).is_ok());
        assert!(sign_scheme(CKM_ECDSA, SignScheme::Ecdsa, EC, 20).is_ok());
        assert!(sign_scheme(CKM_ECDSA_SHA384, SignScheme::Ecdsa, EC, 48).is_ok());
        let pss = SignScheme::RsaPss {
            hash: HashAlg::Sha384,
            mgf_hash: HashAlg::Sha384,
            salt_len: 48,
        };
        assert!(sign_scheme(CKM_RSA_PKCS_PSS, pss, RSA, 48).is_ok());
        assert!(sign_scheme(CKM_SHA384_RSA_PKCS_PSS, pss, RSA, 48).is_ok());
    }

    #[test]
    fn eddsa_needs_an_ed25519_key_and_a_slot_sized_message() {
        let ed = KeySpec::Ed25519;
        assert_eq!(
            sign_scheme(CKM_EDDSA, SignScheme::Ed25519, ed, 0).unwrap(),
            card::SignScheme::Ed25519
        );
        assert!(sign_scheme(CKM_EDDSA, SignScheme::Ed25519, ed, MAX_EDDSA_MESSAGE).is_ok());
        assert_eq!(
            rv(sign_scheme(
                CKM_EDDSA,
                SignScheme::Ed25519,
                ed,
                MAX_EDDSA_MESSAGE + 1
            )),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(sign_scheme(CKM_EDDSA, SignScheme::Ed25519, EC, 5)),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            rv(sign_scheme(CKM_EDDSA, SignScheme::Ecdsa, ed, 5)),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            rv(sign_scheme(CKM_ECDSA, SignScheme::Ecdsa, ed, 32)),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            rv(sign_scheme(CKM_ECDSA, SignScheme::Ed25519, EC, 32)),
            CKR_ARGUMENTS_BAD
        );
    }

    #[test]
    fn mismatches_get_their_codes() {
        assert_eq!(
            rv(sign_scheme(CKM_ECDSA, SignScheme::Ecdsa, RSA, 32)),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            rv(sign_scheme(
                CKM_SHA256_RSA_PKCS,
                SignScheme::RsaPkcs1(HashAlg::Sha256),
                EC,
                32
            )),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            rv(sign_scheme(CKM_SHA_1, SignScheme::Ecdsa, EC, 32)),
            CKR_MECHANISM_INVALID
        );
        assert_eq!(
            rv(sign_scheme(CKM_ECDSA_SHA256, SignScheme::Ecdsa, EC, 31)),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(sign_scheme(CKM_ECDSA, SignScheme::Ecdsa, EC, 0)),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(sign_scheme(
                CKM_RSA_PKCS,
                SignScheme::RsaPkcs1DigestInfo,
                RSA,
                246
            )),
            CKR_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(sign_scheme(
                CKM_SHA256_RSA_PKCS,
                SignScheme::RsaPkcs1(HashAlg::Sha384),
                RSA,
                48
            )),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            rv(sign_scheme(
                CKM_ECDSA_SHA256,
                SignScheme::RsaPkcs1DigestInfo,
                EC,
                32
            )),
            CKR_ARGUMENTS_BAD
        );
        let pss = SignScheme::RsaPss {
            hash: HashAlg::Sha256,
            mgf_hash: HashAlg::Sha256,
            salt_len: 32,
        };
        assert_eq!(
            rv(sign_scheme(CKM_SHA384_RSA_PKCS_PSS, pss, RSA, 32)),
            CKR_MECHANISM_PARAM_INVALID
        );
        let big_salt = SignScheme::RsaPss {
            hash: HashAlg::Sha256,
            mgf_hash: HashAlg::Sha256,
            salt_len: 300,
        };
        assert_eq!(
            rv(sign_scheme(CKM_RSA_PKCS_PSS, big_salt, RSA, 32)),
            CKR_MECHANISM_PARAM_INVALID
        );
    }

    #[test]
    fn decrypt_schemes_are_checked_against_mechanism_key_and_length() {
        let oaep = |hash, mgf_hash| DecryptScheme::RsaOaep {
            hash,
            mgf_hash,
            label: b"l".to_vec(),
        };
        let pkcs1 = DecryptScheme::RsaPkcs1;
        assert_eq!(
            decrypt_scheme(CKM_RSA_PKCS, &pkcs1, RSA, 256).unwrap(),
            card::DecryptScheme::RsaPkcs1
        );
        assert_eq!(
            decrypt_scheme(
                CKM_RSA_PKCS_OAEP,
                &oaep(HashAlg::Sha384, HashAlg::Sha384),
                RSA,
                256
            )
            .unwrap(),
            card::DecryptScheme::RsaOaep {
                hash: card::Hash::Sha384,
                mgf_hash: card::Hash::Sha384,
                label: b"l".to_vec()
            }
        );
        let code = |r: Result<card::DecryptScheme, HsmError>| r.unwrap_err().rv();
        // SHA-224 and differing MGF1 hashes are the card's too.
        assert_eq!(
            decrypt_scheme(
                CKM_RSA_PKCS_OAEP,
                &oaep(HashAlg::Sha224, HashAlg::Sha1),
                RSA,
                256
            )
            .unwrap(),
            card::DecryptScheme::RsaOaep {
                hash: card::Hash::Sha224,
                mgf_hash: card::Hash::Sha1,
                label: b"l".to_vec()
            }
        );
        assert_eq!(
            code(decrypt_scheme(CKM_RSA_PKCS, &pkcs1, RSA, 255)),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        assert_eq!(
            code(decrypt_scheme(CKM_RSA_PKCS, &pkcs1, EC, 64)),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            code(decrypt_scheme(CKM_RSA_PKCS_OAEP, &pkcs1, RSA, 256)),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            code(decrypt_scheme(CKM_ECDSA, &pkcs1, RSA, 256)),
            CKR_MECHANISM_INVALID
        );
        let list = mechanism_list();
        let oaep_info = list
            .iter()
            .find(|i| i.mechanism == CKM_RSA_PKCS_OAEP)
            .unwrap();
        assert_eq!(
            oaep_info.flags & (CKF_ENCRYPT | CKF_DECRYPT),
            CKF_ENCRYPT | CKF_DECRYPT
        );
        assert_eq!(oaep_info.flags & CKF_SIGN, 0);
    }

    #[test]
    fn list_offers_every_signing_mechanism_the_checks_accept() {
        let list = mechanism_list();
        for m in [
            CKM_RSA_PKCS,
            CKM_ECDSA,
            CKM_SHA512_RSA_PKCS_PSS,
            CKM_EC_KEY_PAIR_GEN,
        ] {
            assert!(list.iter().any(|i| i.mechanism == m), "{m:#x} missing");
        }
        let keygen = list
            .iter()
            .find(|i| i.mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN)
            .unwrap();
        assert_eq!((keygen.min_key_size, keygen.max_key_size), (2048, 4096));
    }
}
