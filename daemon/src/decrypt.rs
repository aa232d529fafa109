//! C_Decrypt requests: the daemon's checks before the card decrypts.
//!
//! The key must be a visible private RSA key with CKA_DECRYPT, the
//! mechanism listed in its CKA_ALLOWED_MECHANISMS (if set), the scheme must
//! fit the mechanism, and the ciphertext must be exactly one block. The
//! card enforces CKA_DECRYPT again from the policy bound into the blob.
//!
//! CKM_RSA_PKCS never fails on a well-sized ciphertext: the card answers
//! invalid padding with a synthetic message (implicit rejection; see the
//! card's `firmware::decrypt`), so neither the reply code nor the daemon's
//! work depends on the padding. An OAEP ciphertext that does not decode is
//! CKR_ENCRYPTED_DATA_INVALID.
//!
//! Encryption normally runs in the module, but the module's crypto library
//! (aws-lc-rs) offers OAEP only with MGF1 over the label hash and without
//! SHA-224; for the other hash pairs the module sends `OaepEncrypt` and the
//! card encrypts to the public key through aws-lc's own EVP interface. This
//! is a public operation: the key is a public key object the session sees
//! (a public object needs no login), with CKA_ENCRYPT and the mechanism
//! allowed; the daemon passes the plaintext through without keeping it.

use cryptoki_sys::*;
use mesign_proto::DecryptScheme;
use pci_driver_shim::command::{CardFault, CardRequest, CardResponse};

use super::{Hsm, KeyUse};
use crate::attributes;
use crate::card::CardFailure;
use crate::error::HsmError;
use crate::mechanisms;

impl Hsm {
    pub(super) fn decrypt(
        &self,
        app: super::AppKey,
        session: u64,
        key: u64,
        mechanism: u64,
        scheme: &DecryptScheme,
        input: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let view = self.view(app, session)?;
        let slot = self.slot(view.slot)?;
        let key = Self::usable_key(
            &slot.read().objects,
            &view,
            key,
            KeyUse::private(CKA_DECRYPT, mechanism),
        )?;
        let card_key = key.card_key;
        let scheme =
            mechanisms::decrypt_scheme(mechanism, scheme, card_key.policy.spec, input.len())?;
        self.use_context_login(app, session, key.always_authenticate)?;
        let request = CardRequest::Decrypt {
            blob: card_key.blob.clone(),
            policy: card_key.policy.clone(),
            scheme,
            input: input.to_vec(),
        };
        match slot.card.call(&request) {
            Ok(CardResponse::Bytes(plaintext)) => Ok(plaintext),
            Ok(_) => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
            // The length was checked above, so the card's "bad input" is an
            // OAEP block that does not decode.
            Err(CardFailure::Fault(CardFault::BadInput)) => Err(HsmError::EncryptedDataInvalid),
            Err(failure) => Err(HsmError::Card(failure)),
        }
    }

    /// C_Encrypt with CKM_RSA_PKCS_OAEP on the card (see the module docs).
    pub(super) fn oaep_encrypt(
        &self,
        app: super::AppKey,
        session: u64,
        key: u64,
        scheme: &DecryptScheme,
        input: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let view = self.view(app, session)?;
        let slot = self.slot(view.slot)?;
        let (hash, mgf_hash, label) = mechanisms::oaep_encrypt_params(scheme)?;
        let (modulus, exponent) = {
            let state = slot.read();
            let (_, object) =
                Self::resolve(&state.objects, &view, key).ok_or(HsmError::KeyHandleInvalid(key))?;
            let attrs = &object.attrs;
            match attributes::ulong(attrs, CKA_CLASS) {
                Some(CKO_PUBLIC_KEY) => {}
                Some(CKO_PRIVATE_KEY | CKO_SECRET_KEY) => {
                    return Err(HsmError::KeyTypeInconsistent)
                }
                _ => return Err(HsmError::KeyHandleInvalid(key)),
            }
            if attributes::ulong(attrs, CKA_KEY_TYPE) != Some(CKK_RSA) {
                return Err(HsmError::KeyTypeInconsistent);
            }
            if attributes::flag(attrs, CKA_ENCRYPT) != Some(true) {
                return Err(HsmError::KeyFunctionNotPermitted);
            }
            if let Some(allowed) = attributes::allowed_mechanisms(attrs) {
                if !allowed.is_empty() && !allowed.contains(&CKM_RSA_PKCS_OAEP) {
                    return Err(HsmError::MechanismInvalid(CKM_RSA_PKCS_OAEP));
                }
            }
            let value = |ty| attrs.get(&ty).cloned().unwrap_or_default();
            (value(CKA_MODULUS), value(CKA_PUBLIC_EXPONENT))
        };
        let request = CardRequest::OaepEncrypt {
            modulus,
            exponent,
            hash,
            mgf_hash,
            label,
            input: input.to_vec(),
        };
        match slot.card.call(&request) {
            Ok(CardResponse::Bytes(ciphertext)) => Ok(ciphertext),
            Ok(_) => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
            // The module checked the length; the card refuses a message
            // longer than the key carries with these hashes.
            Err(CardFailure::Fault(CardFault::BadInput)) => {
                Err(HsmError::DataLenRange(input.len()))
            }
            Err(CardFailure::Fault(CardFault::KeyTypeMismatch)) => {
                Err(HsmError::KeyTypeInconsistent)
            }
            Err(failure) => Err(HsmError::Card(failure)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{PinPolicy, Slot};
    use super::*;
    use crate::card::fake::FakeCard;
    use crate::sessions::AppKey;
    use mesign_proto::{attr, Attribute, HashAlg, ReplyBody, RequestBody};

    const APP: AppKey = AppKey { pid: 1, app: 1 };

    fn ok(h: &Hsm, body: RequestBody) -> ReplyBody {
        h.handle(APP, body.clone())
            .unwrap_or_else(|e| panic!("{body:?}: {e}"))
    }

    fn rv(h: &Hsm, body: RequestBody) -> u64 {
        h.handle(APP, body).expect_err("expected an error").rv()
    }

    /// A token with a user logged in on a RW session, on a fake card.
    fn ready(dir: &std::path::Path) -> (Hsm, Arc<FakeCard>, u64) {
        let card = Arc::new(FakeCard::default());
        let slot = Slot::open(card.clone(), &dir.join("slot-0/token.redb")).unwrap();
        let pins = PinPolicy {
            iterations: 1,
            ..PinPolicy::default()
        };
        let h = Hsm::new(pins, vec![slot]);
        h.connect(APP);
        ok(
            &h,
            RequestBody::InitToken {
                slot: 0,
                so_pin: b"sopin".to_vec(),
                label: b"t".to_vec(),
            },
        );
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        let ReplyBody::Session(s) = ok(&h, RequestBody::OpenSession { slot: 0, flags }) else {
            panic!("no session")
        };
        let login = |user_type, pin: &[u8]| RequestBody::Login {
            session: s,
            user_type,
            pin: pin.to_vec(),
        };
        ok(&h, login(CKU_SO, b"sopin"));
        ok(
            &h,
            RequestBody::InitPin {
                session: s,
                pin: b"1234".to_vec(),
            },
        );
        ok(&h, RequestBody::Logout { session: s });
        ok(&h, login(CKU_USER, b"1234"));
        (h, card, s)
    }

    fn rsa_pair(h: &Hsm, session: u64, decrypt: bool) -> u64 {
        let a = |ty, value| Attribute { ty, value };
        let body = RequestBody::GenerateKeyPair {
            session,
            mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
            public_template: vec![a(CKA_MODULUS_BITS, attr::ulong_value(2048))],
            private_template: vec![
                a(CKA_DECRYPT, attr::bool_value(decrypt)),
                a(
                    CKA_ALLOWED_MECHANISMS,
                    attr::ulong_array_value(&[CKM_RSA_PKCS, CKM_RSA_PKCS_OAEP]),
                ),
            ],
        };
        match ok(h, body) {
            ReplyBody::KeyPair { private, .. } => private,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oaep_encryption_on_the_card_checks_the_public_key_first() {
        let dir = tempfile::tempdir().unwrap();
        let (h, card, s) = ready(dir.path());
        let a = |ty, value| Attribute { ty, value };
        let pair = |encrypt| {
            let body = RequestBody::GenerateKeyPair {
                session: s,
                mechanism: CKM_RSA_PKCS_KEY_PAIR_GEN,
                public_template: vec![
                    a(CKA_MODULUS_BITS, attr::ulong_value(2048)),
                    a(CKA_ENCRYPT, attr::bool_value(encrypt)),
                ],
                private_template: vec![a(CKA_DECRYPT, attr::bool_value(true))],
            };
            match ok(&h, body) {
                ReplyBody::KeyPair { public, private } => (public, private),
                other => panic!("{other:?}"),
            }
        };
        let (public, private) = pair(true);
        let (no_encrypt, _) = pair(false);
        let scheme = DecryptScheme::RsaOaep {
            hash: HashAlg::Sha224,
            mgf_hash: HashAlg::Sha1,
            label: b"l".to_vec(),
        };
        let body = |key, scheme: &DecryptScheme| RequestBody::OaepEncrypt {
            session: s,
            key,
            scheme: scheme.clone(),
            input: b"cek".to_vec(),
        };
        let sent = || card.requests.lock().unwrap().len();
        let before = sent();
        assert_eq!(rv(&h, body(private, &scheme)), CKR_KEY_TYPE_INCONSISTENT);
        assert_eq!(
            rv(&h, body(no_encrypt, &scheme)),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        assert_eq!(
            rv(&h, body(public, &DecryptScheme::RsaPkcs1)),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(rv(&h, body(0xdead, &scheme)), CKR_KEY_HANDLE_INVALID);
        assert_eq!(sent(), before, "refused requests must not reach the card");
        assert_eq!(
            ok(&h, body(public, &scheme)),
            ReplyBody::Bytes(b"cek".to_vec())
        );
        let last = card.requests.lock().unwrap().last().cloned().unwrap();
        let CardRequest::OaepEncrypt {
            modulus,
            exponent,
            hash,
            mgf_hash,
            label,
            ..
        } = last
        else {
            panic!("{last:?}")
        };
        assert_eq!((modulus.len(), exponent), (256, vec![1, 0, 1]));
        assert_eq!(
            (hash, mgf_hash, label),
            (
                pci_driver_shim::command::Hash::Sha224,
                pci_driver_shim::command::Hash::Sha1,
                b"l".to_vec()
            )
        );
        *card.fail_next.lock().unwrap() = Some(CardFailure::Fault(CardFault::BadInput));
        assert_eq!(rv(&h, body(public, &scheme)), CKR_DATA_LEN_RANGE);
    }

    #[test]
    fn decrypt_checks_usage_mechanism_and_length_before_the_card() {
        let dir = tempfile::tempdir().unwrap();
        let (h, card, s) = ready(dir.path());
        let yes = rsa_pair(&h, s, true);
        let no = rsa_pair(&h, s, false);
        let body = |key, mechanism, scheme: DecryptScheme, len| RequestBody::Decrypt {
            session: s,
            key,
            mechanism,
            scheme,
            input: vec![7; len],
        };
        let oaep = |hash, mgf_hash| DecryptScheme::RsaOaep {
            hash,
            mgf_hash,
            label: vec![],
        };
        let sent = || card.requests.lock().unwrap().len();
        let before = sent();
        let pkcs1 = DecryptScheme::RsaPkcs1;
        assert_eq!(
            rv(&h, body(no, CKM_RSA_PKCS, pkcs1.clone(), 256)),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        assert_eq!(
            rv(&h, body(yes, CKM_RSA_PKCS, pkcs1.clone(), 255)),
            CKR_ENCRYPTED_DATA_LEN_RANGE
        );
        assert_eq!(
            rv(&h, body(yes, CKM_RSA_X_509, pkcs1.clone(), 256)),
            CKR_MECHANISM_INVALID
        );
        assert_eq!(
            rv(
                &h,
                body(yes, CKM_RSA_PKCS, oaep(HashAlg::Sha1, HashAlg::Sha1), 256)
            ),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(sent(), before, "refused requests must not reach the card");
        assert!(matches!(
            ok(&h, body(yes, CKM_RSA_PKCS, pkcs1, 256)),
            ReplyBody::Bytes(_)
        ));
        assert_eq!(sent(), before + 1);
        *card.fail_next.lock().unwrap() = Some(CardFailure::Fault(CardFault::BadInput));
        assert_eq!(
            rv(
                &h,
                body(
                    yes,
                    CKM_RSA_PKCS_OAEP,
                    oaep(HashAlg::Sha256, HashAlg::Sha256),
                    256
                )
            ),
            CKR_ENCRYPTED_DATA_INVALID
        );
    }
}
