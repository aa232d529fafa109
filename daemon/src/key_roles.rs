//! Key roles that must never meet on one key: the rule against the
//! key-separation attacks of Clulow (2003) and the Tookan study
//! (Bortolozzo, Centenaro, Focardi, Steel 2010).
//!
//! The rule, checked wherever a key comes to exist (C_GenerateKey,
//! C_GenerateKeyPair, C_CreateObject, C_UnwrapKey, C_DeriveKey through the
//! secret-key rules) and on every C_SetAttributeValue:
//! - CKA_WRAP with CKA_DECRYPT: wrap a sensitive key under K, then
//!   C_Decrypt the wrapped bytes with K, and the key is in clear.
//! - CKA_UNWRAP with CKA_ENCRYPT: C_Encrypt a value of one's choosing
//!   with K, then C_UnwrapKey it with K, and the token holds a key whose
//!   value the attacker knows (and trusts it as its own).
//! - CKA_UNWRAP with CKA_DECRYPT: any key wrapped under K (here or on
//!   another box) can be C_Decrypt-ed into the clear; for AES, raw block
//!   decryption through CBC is enough to undo RFC 3394.
//! - For a key pair, CKA_WRAP on the public half with CKA_DECRYPT on the
//!   private half: the public-wrap / private-decrypt variant of the first.
//!   (C_WrapKey also refuses an RSA public key whose private half on the
//!   token decrypts, so an imported copy of the public key does not get
//!   around this.)
//!
//! All are CKR_TEMPLATE_INCONSISTENT, naming the second attribute of the
//! pair. Wrapping with encryption (wrap under K, encrypt with K) and
//! signing with anything are not conflicts: neither reveals a key.

use cryptoki_sys::*;

use super::{flag, AttrMap};
use crate::error::HsmError;

/// The pairs of usages one key may not combine.
pub const CONFLICTS: &[(u64, u64)] = &[
    (CKA_WRAP, CKA_DECRYPT),
    (CKA_UNWRAP, CKA_ENCRYPT),
    (CKA_UNWRAP, CKA_DECRYPT),
];

/// Refuses a key (secret or private) whose usages conflict.
pub fn check(key: &AttrMap) -> Result<(), HsmError> {
    let on = |ty| flag(key, ty) == Some(true);
    match CONFLICTS.iter().find(|&&(a, b)| on(a) && on(b)) {
        Some(&(_, second)) => Err(HsmError::TemplateInconsistent(second)),
        None => Ok(()),
    }
}

/// Refuses a key pair whose halves together conflict (and either half
/// alone).
pub fn check_pair(public: &AttrMap, private: &AttrMap) -> Result<(), HsmError> {
    check(private)?;
    if flag(public, CKA_WRAP) == Some(true) && flag(private, CKA_DECRYPT) == Some(true) {
        return Err(HsmError::TemplateInconsistent(CKA_DECRYPT));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::attr;

    fn key(on: &[u64]) -> AttrMap {
        on.iter().map(|&ty| (ty, attr::bool_value(true))).collect()
    }

    #[test]
    fn each_conflicting_pair_is_refused_and_nothing_else() {
        for &(a, b) in CONFLICTS {
            let err = check(&key(&[a, b])).unwrap_err();
            assert_eq!(err.rv(), CKR_TEMPLATE_INCONSISTENT);
            let mut off = key(&[a]);
            off.insert(b, attr::bool_value(false));
            assert!(check(&off).is_ok(), "{a:#x} alone");
        }
        for fine in [
            &[CKA_WRAP, CKA_ENCRYPT, CKA_SIGN, CKA_VERIFY][..],
            &[CKA_ENCRYPT, CKA_DECRYPT, CKA_SIGN, CKA_VERIFY, CKA_DERIVE],
            &[CKA_WRAP, CKA_UNWRAP],
        ] {
            assert!(check(&key(fine)).is_ok(), "{fine:x?}");
        }
    }

    #[test]
    fn a_pair_may_not_wrap_with_one_half_and_decrypt_with_the_other() {
        let public_wraps = key(&[CKA_WRAP, CKA_ENCRYPT]);
        assert_eq!(
            check_pair(&public_wraps, &key(&[CKA_DECRYPT]))
                .unwrap_err()
                .rv(),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert!(check_pair(&public_wraps, &key(&[CKA_SIGN, CKA_UNWRAP])).is_ok());
        assert!(check_pair(&key(&[CKA_ENCRYPT]), &key(&[CKA_DECRYPT])).is_ok());
        assert!(check_pair(&key(&[]), &key(&[CKA_DECRYPT, CKA_UNWRAP])).is_err());
    }
}
