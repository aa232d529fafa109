//! Secret-key requests: C_GenerateKey, C_CreateObject with a key value,
//! AES encryption and decryption, and HMAC / CMAC signing and
//! verification, all executed by the card.
//!
//! The daemon checks what it can before the card is asked (the key is a
//! visible secret key with the usage flag set, the mechanism is allowed,
//! the parameters and lengths fit); the card checks the usage again from
//! the policy bound into the blob. A key value given to C_CreateObject is
//! passed to the card and zeroized; the daemon stores only the blob.

use std::sync::Arc;

use cryptoki_sys::*;
use mesign_proto::{Attribute, CipherParams};
use pci_driver_shim::command::{
    self as card, CardFault, CardRequest, CardResponse, KeySpec, MAX_SYMMETRIC_INPUT,
};
use zeroize::Zeroize;

use super::{created, object_name, Hsm, KeyUse};
use crate::attributes::secret_keys::{self, SecretKeyPlan};
use crate::attributes::{self, AttrMap};
use crate::card::CardFailure;
use crate::error::HsmError;
use crate::sessions::{AppKey, SessionView};
use crate::store::CardKey;

/// AES-GCM's only IV length here (aws-lc-rs takes 96-bit nonces).
const GCM_IV_LEN: usize = 12;
/// AES-GCM's only tag length here (aws-lc-rs appends full tags).
const GCM_TAG_BITS: u64 = 128;
const GCM_TAG_LEN: usize = 16;
const AES_BLOCK: usize = 16;

impl Hsm {
    /// C_GenerateKey.
    pub(super) fn generate_key(
        &self,
        app: AppKey,
        session: u64,
        mechanism: u64,
        template: &[Attribute],
    ) -> Result<u64, HsmError> {
        let view = self.view(app, session)?;
        let plan = secret_keys::generate_plan(mechanism, attributes::parse_template(template)?)?;
        self.new_secret_key(app, &view, plan, |policy| CardRequest::GenerateSecret {
            policy,
        })
    }

    /// C_CreateObject for CKO_SECRET_KEY: the card wraps the value.
    pub(super) fn import_secret_key(
        &self,
        app: AppKey,
        session: u64,
        template: &[Attribute],
    ) -> Result<u64, HsmError> {
        let view = self.view(app, session)?;
        let mut map = attributes::parse_template(template)?;
        let planned = secret_keys::import_plan(std::mem::take(&mut map));
        zeroize_map(&mut map);
        let (plan, value) = planned?;
        self.new_secret_key(app, &view, plan, |policy| CardRequest::ImportSecret {
            policy,
            value: value.to_vec(),
        })
    }

    /// Makes a secret key object from `plan` with the card command
    /// `request` builds from the new key's policy (generation, import or
    /// derivation).
    pub(super) fn new_secret_key(
        &self,
        app: AppKey,
        view: &SessionView,
        mut plan: SecretKeyPlan,
        request: impl FnOnce(card::KeyPolicy) -> CardRequest,
    ) -> Result<u64, HsmError> {
        Self::check_new_object(view, &plan.attrs)?;
        let slot = self.slot(view.slot)?;
        let token = attributes::flag(&plan.attrs, CKA_TOKEN) == Some(true);
        let id = self.allocate(slot, token);
        let policy = plan.policy(id);
        let mut request = request(policy.clone());
        let answer = slot.card.call(&request);
        if let CardRequest::ImportSecret { value, .. } = &mut request {
            value.zeroize();
        }
        let derivation = matches!(request, CardRequest::DeriveEcdh { .. });
        let answer = answer.map_err(|failure| match failure {
            // The card refuses a peer point that is not on the key's curve.
            CardFailure::Fault(CardFault::BadInput) if derivation => {
                HsmError::MechanismParamInvalid
            }
            failure => HsmError::Card(failure),
        });
        let (blob, check_value) = match answer? {
            CardResponse::SecretKey { blob, check_value } => (blob, check_value),
            _ => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        };
        plan.add_check_value(check_value);
        let card_key = Arc::new(CardKey { blob, policy });
        let object = self.new_object(view, plan.attrs, Some(card_key));
        let name = object_name(id, &object);
        let handle = Self::handle_of(view, id, &object);
        self.store_objects(view, vec![(id, object)])?;
        if token {
            slot.audit(Some(app.pid), created(name));
        }
        Ok(handle)
    }

    /// The card key of a visible secret key whose `usage` flag is set and
    /// whose CKA_ALLOWED_MECHANISMS (if set) lists `mechanism`.
    fn secret_key(
        &self,
        view: &SessionView,
        key: u64,
        usage: u64,
        mechanism: u64,
    ) -> Result<Arc<CardKey>, HsmError> {
        let slot = self.slot(view.slot)?;
        let objects = &slot.read().objects;
        Self::usable_key(objects, view, key, KeyUse::secret(usage, mechanism)).map(|k| k.card_key)
    }

    /// C_Encrypt / C_Decrypt with an AES key.
    #[allow(clippy::too_many_arguments)] // one per field of the request
    pub(super) fn secret_crypt(
        &self,
        app: AppKey,
        session: u64,
        key: u64,
        mechanism: u64,
        params: &CipherParams,
        input: &[u8],
        encrypt: bool,
    ) -> Result<Vec<u8>, HsmError> {
        let view = self.view(app, session)?;
        let usage = if encrypt { CKA_ENCRYPT } else { CKA_DECRYPT };
        let card_key = self.secret_key(&view, key, usage, mechanism)?;
        let cipher = cipher(mechanism, params, card_key.policy.spec)?;
        check_crypt_input(&cipher, input.len(), encrypt)?;
        let request = CardRequest::Cipher {
            blob: card_key.blob.clone(),
            policy: card_key.policy.clone(),
            cipher,
            encrypt,
            input: input.to_vec(),
        };
        match self.slot(view.slot)?.card.call(&request) {
            Ok(CardResponse::Bytes(output)) => Ok(output),
            Ok(_) => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
            // Lengths were checked above: what is left is a CTR counter
            // that would wrap, or a ciphertext that does not decrypt.
            Err(CardFailure::Fault(CardFault::BadInput)) if encrypt => {
                Err(HsmError::DataLenRange(input.len()))
            }
            Err(CardFailure::Fault(CardFault::BadInput)) => Err(HsmError::EncryptedDataInvalid),
            Err(failure) => Err(HsmError::Card(failure)),
        }
    }

    /// C_Sign (`expected` None) or C_Verify with an HMAC or CMAC mechanism.
    /// A signature comes back as `Some`; a verification that succeeds as
    /// `None`.
    pub(super) fn mac(
        &self,
        app: AppKey,
        session: u64,
        key: u64,
        mechanism: u64,
        input: &[u8],
        expected: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, HsmError> {
        let view = self.view(app, session)?;
        let usage = if expected.is_some() {
            CKA_VERIFY
        } else {
            CKA_SIGN
        };
        let card_key = self.secret_key(&view, key, usage, mechanism)?;
        let (mac, len) = mac(mechanism, card_key.policy.spec)?;
        if input.len() > MAX_SYMMETRIC_INPUT {
            return Err(HsmError::DataLenRange(input.len()));
        }
        if let Some(tag) = expected {
            if tag.len() != len {
                return Err(HsmError::SignatureLenRange(tag.len()));
            }
        }
        let request = CardRequest::Mac {
            blob: card_key.blob.clone(),
            policy: card_key.policy.clone(),
            mac,
            input: input.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
        };
        match (self.slot(view.slot)?.card.call(&request)?, expected) {
            (CardResponse::Bytes(tag), None) => Ok(Some(tag)),
            (CardResponse::Verified(true), Some(_)) => Ok(None),
            (CardResponse::Verified(false), Some(_)) => Err(HsmError::SignatureInvalid),
            _ => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
        }
    }
}

/// Overwrites whatever values a parsed template still holds.
fn zeroize_map(map: &mut AttrMap) {
    for value in map.values_mut() {
        value.zeroize();
    }
}

/// The card's cipher for `mechanism` with `params` on a key of `spec`.
fn cipher(mechanism: u64, params: &CipherParams, spec: KeySpec) -> Result<card::Cipher, HsmError> {
    if !matches!(mechanism, CKM_AES_GCM | CKM_AES_CBC_PAD | CKM_AES_CTR) {
        return Err(HsmError::MechanismInvalid(mechanism));
    }
    if !matches!(spec, KeySpec::Aes { .. }) {
        return Err(HsmError::KeyTypeInconsistent);
    }
    match (mechanism, params) {
        (CKM_AES_GCM, CipherParams::AesGcm { iv, aad, tag_bits }) => {
            if iv.len() != GCM_IV_LEN || *tag_bits != GCM_TAG_BITS {
                return Err(HsmError::MechanismParamInvalid);
            }
            Ok(card::Cipher::AesGcm {
                iv: iv.clone(),
                aad: aad.clone(),
            })
        }
        (CKM_AES_CBC_PAD, CipherParams::AesCbcPad { iv }) => {
            if iv.len() != AES_BLOCK {
                return Err(HsmError::MechanismParamInvalid);
            }
            Ok(card::Cipher::AesCbcPad { iv: iv.clone() })
        }
        (CKM_AES_CBC_PAD, CipherParams::AesCbcBlocks { iv }) => {
            if iv.len() != AES_BLOCK {
                return Err(HsmError::MechanismParamInvalid);
            }
            Ok(card::Cipher::AesCbcBlocks { iv: iv.clone() })
        }
        (
            CKM_AES_CTR,
            CipherParams::AesCtr {
                counter,
                counter_bits,
            },
        ) => {
            if counter.len() != AES_BLOCK || !(1..=128).contains(counter_bits) {
                return Err(HsmError::MechanismParamInvalid);
            }
            Ok(card::Cipher::AesCtr {
                counter: counter.clone(),
                counter_bits: *counter_bits as u32,
            })
        }
        // The module sent parameters of another mechanism.
        _ => Err(HsmError::ArgumentsBad),
    }
}

/// Input lengths the card would refuse, refused before it is asked.
fn check_crypt_input(cipher: &card::Cipher, len: usize, encrypt: bool) -> Result<(), HsmError> {
    let fits = match (cipher, encrypt) {
        // A middle part of CBC-PAD: whole blocks either way.
        (card::Cipher::AesCbcBlocks { .. }, _) => len % AES_BLOCK == 0,
        (_, true) => true,
        (card::Cipher::AesGcm { .. }, false) => len >= GCM_TAG_LEN,
        (card::Cipher::AesCbcPad { .. }, false) => len > 0 && len % AES_BLOCK == 0,
        (card::Cipher::AesCtr { .. }, false) => true,
    };
    match (fits && len <= MAX_SYMMETRIC_INPUT, encrypt) {
        (true, _) => Ok(()),
        (false, true) => Err(HsmError::DataLenRange(len)),
        (false, false) => Err(HsmError::EncryptedDataLenRange(len)),
    }
}

/// The card's MAC for `mechanism` on a key of `spec`, and the MAC length.
fn mac(mechanism: u64, spec: KeySpec) -> Result<(card::Mac, usize), HsmError> {
    let (mac, len) = match mechanism {
        CKM_SHA256_HMAC => (card::Mac::Hmac(card::Hash::Sha256), 32),
        CKM_SHA384_HMAC => (card::Mac::Hmac(card::Hash::Sha384), 48),
        CKM_SHA512_HMAC => (card::Mac::Hmac(card::Hash::Sha512), 64),
        CKM_AES_CMAC => (card::Mac::AesCmac, 16),
        other => return Err(HsmError::MechanismInvalid(other)),
    };
    let fits = match mac {
        card::Mac::Hmac(_) => matches!(spec, KeySpec::GenericSecret { .. }),
        card::Mac::AesCmac => matches!(spec, KeySpec::Aes { .. }),
    };
    if fits {
        Ok((mac, len))
    } else {
        Err(HsmError::KeyTypeInconsistent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_parameters_are_checked_before_the_card() {
        let aes = KeySpec::Aes { bytes: 16 };
        let gcm = |iv_len, tag_bits| CipherParams::AesGcm {
            iv: vec![0; iv_len],
            aad: vec![],
            tag_bits,
        };
        assert!(cipher(CKM_AES_GCM, &gcm(12, 128), aes).is_ok());
        for bad in [gcm(16, 128), gcm(12, 96), gcm(0, 128)] {
            assert_eq!(
                cipher(CKM_AES_GCM, &bad, aes).unwrap_err().rv(),
                CKR_MECHANISM_PARAM_INVALID
            );
        }
        let ctr = |bits| CipherParams::AesCtr {
            counter: vec![0; 16],
            counter_bits: bits,
        };
        assert!(cipher(CKM_AES_CTR, &ctr(32), aes).is_ok());
        assert_eq!(
            cipher(CKM_AES_CTR, &ctr(129), aes).unwrap_err().rv(),
            CKR_MECHANISM_PARAM_INVALID
        );
        assert_eq!(
            cipher(CKM_AES_CBC_PAD, &gcm(12, 128), aes)
                .unwrap_err()
                .rv(),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            cipher(
                CKM_AES_GCM,
                &gcm(12, 128),
                KeySpec::GenericSecret { bytes: 16 }
            )
            .unwrap_err()
            .rv(),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            cipher(CKM_AES_ECB, &gcm(12, 128), aes).unwrap_err().rv(),
            CKR_MECHANISM_INVALID
        );
    }

    #[test]
    fn ciphertext_lengths_and_mac_key_types() {
        let cbc = card::Cipher::AesCbcPad { iv: vec![0; 16] };
        assert!(check_crypt_input(&cbc, 17, true).is_ok());
        assert_eq!(
            check_crypt_input(&cbc, 17, false).unwrap_err().rv(),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        let gcm = card::Cipher::AesGcm {
            iv: vec![0; 12],
            aad: vec![],
        };
        assert!(check_crypt_input(&gcm, 15, false).is_err());
        let blocks = card::Cipher::AesCbcBlocks { iv: vec![0; 16] };
        assert!(check_crypt_input(&blocks, 32, true).is_ok());
        assert!(check_crypt_input(&blocks, 32, false).is_ok());
        assert_eq!(
            check_crypt_input(&blocks, 17, true).unwrap_err().rv(),
            CKR_DATA_LEN_RANGE
        );
        assert!(check_crypt_input(&gcm, 16, false).is_ok());
        assert_eq!(
            check_crypt_input(&gcm, MAX_SYMMETRIC_INPUT + 1, true)
                .unwrap_err()
                .rv(),
            CKR_DATA_LEN_RANGE
        );
        let generic = KeySpec::GenericSecret { bytes: 32 };
        assert_eq!(mac(CKM_SHA384_HMAC, generic).unwrap().1, 48);
        assert_eq!(
            mac(CKM_AES_CMAC, generic).unwrap_err().rv(),
            CKR_KEY_TYPE_INCONSISTENT
        );
        assert_eq!(
            mac(CKM_SHA_1_HMAC, generic).unwrap_err().rv(),
            CKR_MECHANISM_INVALID
        );
    }
}
