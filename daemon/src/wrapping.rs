//! C_WrapKey and C_UnwrapKey: the daemon's checks, then the card wraps or
//! unwraps (key material never leaves the card in clear).
//!
//! C_WrapKey checks, in this order: the wrapping key (an AES secret key
//! for CKM_AES_KEY_WRAP / _PAD / _KWP, an RSA public key for
//! CKM_RSA_PKCS_OAEP; CKA_WRAP; CKA_ALLOWED_MECHANISMS); an RSA public
//! key whose private half on this token may decrypt cannot wrap
//! (CKR_KEY_FUNCTION_NOT_PERMITTED: wrap with the public half, decrypt
//! with the private one, and the key is out; this holds for an imported
//! copy of the public key too); the key to wrap must be a secret or
//! private key of the card (CKR_KEY_NOT_WRAPPABLE otherwise), extractable
//! (CKR_KEY_UNEXTRACTABLE), not itself CKA_TRUSTED, wrapped only under a
//! CKA_TRUSTED key (one that may be trusted: `attributes::may_be_trusted`)
//! if it has CKA_WRAP_WITH_TRUSTED, match the wrapping key's
//! CKA_WRAP_TEMPLATE, and be a secret key for RSA-OAEP (all
//! CKR_KEY_NOT_WRAPPABLE). The card then
//! checks CKA_EXTRACTABLE and CKA_WRAP again from the blobs' policies.
//!
//! C_UnwrapKey checks the unwrapping key the same way (an AES secret key
//! or an RSA private key, CKA_UNWRAP), merges its CKA_UNWRAP_TEMPLATE
//! into the caller's template and checks the result with the rules of
//! every new key (`attributes::unwrap_templates`); the card unwraps,
//! checks CKA_UNWRAP from the policy, and binds the new key's policy into
//! its new blob.
//!
//! CKM_RSA_PKCS (PKCS#1 v1.5) is not offered for wrapping: unwrapping
//! with it would give the unwrapped key's length checks a padding oracle
//! (Bleichenbacher), which implicit rejection alone does not close.

use std::sync::Arc;

use cryptoki_sys::*;
use mesign_proto::{Attribute, HashAlg, WrapMechanism};
use pci_driver_shim::command::{
    self as card, CardFault, CardRequest, CardResponse, WrapAlgorithm, WrappingKey,
};

use super::{created, object_name, Hsm};
use crate::attributes::{self, unwrap_templates, AttrMap};
use crate::audit::Event;
use crate::card::CardFailure;
use crate::error::HsmError;
use crate::objects::{Object, ObjectTable};
use crate::sessions::AppKey;
use crate::store::CardKey;

/// RFC 3394 / 5649 output is whole 64-bit blocks, at least two.
const KW_MIN_LEN: usize = 16;

impl Hsm {
    /// C_WrapKey: the wrapped bytes.
    pub(super) fn wrap_key(
        &self,
        app: AppKey,
        session: u64,
        mechanism: &WrapMechanism,
        wrapping: u64,
        key: u64,
    ) -> Result<Vec<u8>, HsmError> {
        let view = self.view(app, session)?;
        let slot = self.slot(view.slot)?;
        let (request, audited) = {
            let state = slot.read();
            let objects = &state.objects;
            let (wrapper_id, wrapper) = Self::resolve(objects, &view, wrapping)
                .ok_or(HsmError::WrappingKeyHandleInvalid(wrapping))?;
            let wrapping_key = wrapping_key(objects, wrapper, mechanism)?;
            let (target_id, target) =
                Self::resolve(objects, &view, key).ok_or(HsmError::KeyHandleInvalid(key))?;
            let card_key = wrappable(wrapper, target, mechanism)?;
            let request = CardRequest::WrapKey {
                algorithm: algorithm(mechanism)?,
                wrapping: wrapping_key,
                blob: card_key.blob.clone(),
                policy: card_key.policy.clone(),
            };
            let audited = Event::KeyWrapped {
                key: object_name(target_id, target),
                wrapping: object_name(wrapper_id, wrapper),
                mechanism: mechanism_name(mechanism),
            };
            (request, audited)
        };
        match slot.card.call(&request) {
            Ok(CardResponse::Bytes(wrapped)) => {
                // Key material leaves the card: on the record before the
                // caller has it.
                slot.audit(Some(app.pid), audited);
                Ok(wrapped)
            }
            Ok(_) => Err(HsmError::Card(CardFailure::UnexpectedResponse)),
            // RFC 3394 wraps whole 64-bit blocks; one RSA block holds
            // only so much.
            Err(CardFailure::Fault(CardFault::BadInput)) => Err(HsmError::KeySizeRange(0)),
            Err(CardFailure::Fault(CardFault::NotPermitted)) => Err(HsmError::KeyUnextractable),
            Err(failure) => Err(HsmError::Card(failure)),
        }
    }

    /// C_UnwrapKey: the handle of the new key.
    pub(super) fn unwrap_key(
        &self,
        app: AppKey,
        session: u64,
        mechanism: &WrapMechanism,
        unwrapping: u64,
        wrapped: &[u8],
        template: &[Attribute],
    ) -> Result<u64, HsmError> {
        let view = self.view(app, session)?;
        let slot = self.slot(view.slot)?;
        let template = attributes::parse_template(template)?;
        let (card_key, merged) = {
            let state = slot.read();
            let (_, unwrapper) = Self::resolve(&state.objects, &view, unwrapping)
                .ok_or(HsmError::UnwrappingKeyHandleInvalid(unwrapping))?;
            let card_key = unwrapping_key(unwrapper, mechanism, wrapped.len())?;
            (
                card_key,
                unwrap_templates::merge(template, &unwrapper.attrs)?,
            )
        };
        let plan = unwrap_templates::plan(merged)?;
        Self::check_new_object(&view, plan.attrs())?;
        // Everything that can refuse comes before an object id is taken.
        let algorithm = algorithm(mechanism)?;
        let token = attributes::flag(plan.attrs(), CKA_TOKEN) == Some(true);
        let id = self.allocate(slot, token);
        let mut policy = plan.policy(id);
        let request = CardRequest::UnwrapKey {
            algorithm,
            blob: card_key.blob.clone(),
            policy: card_key.policy.clone(),
            wrapped: wrapped.to_vec(),
            new_policy: policy.clone(),
        };
        let (blob, spec, check_value, public) = match slot.card.call(&request) {
            Ok(CardResponse::Unwrapped {
                blob,
                spec,
                check_value,
                public,
            }) => (blob, spec, check_value, public),
            Ok(_) => return Err(HsmError::Card(CardFailure::UnexpectedResponse)),
            Err(CardFailure::Fault(CardFault::BadInput)) => {
                return Err(HsmError::WrappedKeyInvalid)
            }
            // A private key of a size the card does not keep (RSA below
            // 2048 bits).
            Err(CardFailure::Fault(CardFault::BadParameters)) => {
                return Err(HsmError::KeySizeRange(0))
            }
            Err(failure) => return Err(HsmError::Card(failure)),
        };
        policy.spec = spec;
        let attrs = plan.complete(spec, check_value, public.as_ref())?;
        let object = self.new_object(&view, attrs, Some(Arc::new(CardKey { blob, policy })));
        let name = object_name(id, &object);
        let handle = Self::handle_of(&view, id, &object);
        self.store_objects(&view, vec![(id, object)])?;
        if token {
            slot.audit(Some(app.pid), created(name));
        }
        Ok(handle)
    }
}

/// The card's algorithm for a mechanism.
fn algorithm(mechanism: &WrapMechanism) -> Result<WrapAlgorithm, HsmError> {
    Ok(match mechanism {
        WrapMechanism::AesKeyWrap => WrapAlgorithm::AesKw,
        WrapMechanism::AesKeyWrapPad => WrapAlgorithm::AesKwp,
        WrapMechanism::RsaOaep {
            hash,
            mgf_hash,
            label,
        } => {
            let card_hash = |hash: &HashAlg| match hash {
                HashAlg::Sha1 => card::Hash::Sha1,
                HashAlg::Sha224 => card::Hash::Sha224,
                HashAlg::Sha256 => card::Hash::Sha256,
                HashAlg::Sha384 => card::Hash::Sha384,
                HashAlg::Sha512 => card::Hash::Sha512,
            };
            WrapAlgorithm::RsaOaep {
                hash: card_hash(hash),
                mgf_hash: card_hash(mgf_hash),
                label: label.clone(),
            }
        }
    })
}

/// How the audit log names a wrapping mechanism.
fn mechanism_name(mechanism: &WrapMechanism) -> &'static str {
    match mechanism {
        WrapMechanism::AesKeyWrap => "AES key wrap (RFC 3394)",
        WrapMechanism::AesKeyWrapPad => "AES key wrap with padding (RFC 5649)",
        WrapMechanism::RsaOaep { .. } => "RSA-OAEP",
    }
}

/// The PKCS#11 mechanisms a [`WrapMechanism`] may stand for, for
/// CKA_ALLOWED_MECHANISMS.
fn mechanism_types(mechanism: &WrapMechanism) -> &'static [u64] {
    match mechanism {
        WrapMechanism::AesKeyWrap => &[CKM_AES_KEY_WRAP],
        WrapMechanism::AesKeyWrapPad => &[CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP],
        WrapMechanism::RsaOaep { .. } => &[CKM_RSA_PKCS_OAEP],
    }
}

/// Checks a key's class and type for the mechanism, its usage flag and
/// its CKA_ALLOWED_MECHANISMS. `inconsistent` is the answer for a key of
/// the wrong class or type.
fn check_key(
    object: &Object,
    mechanism: &WrapMechanism,
    usage: u64,
    inconsistent: HsmError,
) -> Result<(), HsmError> {
    let class = attributes::ulong(&object.attrs, CKA_CLASS);
    let key_type = attributes::ulong(&object.attrs, CKA_KEY_TYPE);
    let fits = match (mechanism, usage) {
        (WrapMechanism::RsaOaep { .. }, CKA_WRAP) => {
            class == Some(CKO_PUBLIC_KEY) && key_type == Some(CKK_RSA)
        }
        (WrapMechanism::RsaOaep { .. }, _) => {
            class == Some(CKO_PRIVATE_KEY) && key_type == Some(CKK_RSA)
        }
        _ => class == Some(CKO_SECRET_KEY) && key_type == Some(CKK_AES),
    };
    if !fits {
        return Err(inconsistent);
    }
    if attributes::flag(&object.attrs, usage) != Some(true) {
        return Err(HsmError::KeyFunctionNotPermitted);
    }
    // Keys stored before the role rule existed may still combine roles:
    // such a key does not wrap or unwrap (see `attributes::key_roles`).
    if attributes::key_roles::check(&object.attrs).is_err() {
        return Err(HsmError::KeyFunctionNotPermitted);
    }
    if let Some(allowed) = attributes::allowed_mechanisms(&object.attrs) {
        let types = mechanism_types(mechanism);
        if !allowed.is_empty() && !types.iter().any(|t| allowed.contains(t)) {
            return Err(HsmError::MechanismInvalid(types[0]));
        }
    }
    Ok(())
}

/// The wrapping key as the card takes it.
fn wrapping_key(
    objects: &ObjectTable,
    wrapper: &Object,
    mechanism: &WrapMechanism,
) -> Result<WrappingKey, HsmError> {
    check_key(
        wrapper,
        mechanism,
        CKA_WRAP,
        HsmError::WrappingKeyTypeInconsistent,
    )?;
    if let WrapMechanism::RsaOaep { .. } = mechanism {
        let attr = |ty| wrapper.attrs.get(&ty).cloned().unwrap_or_default();
        let modulus = attr(CKA_MODULUS);
        if private_half_decrypts(objects, &modulus) {
            return Err(HsmError::KeyFunctionNotPermitted);
        }
        return Ok(WrappingKey::RsaPublic {
            modulus,
            exponent: attr(CKA_PUBLIC_EXPONENT),
        });
    }
    if attributes::ulong(&wrapper.attrs, CKA_VALUE_LEN) == Some(24) {
        return Err(HsmError::WrappingKeySizeRange);
    }
    let card_key = wrapper
        .card_key
        .as_ref()
        .ok_or(HsmError::WrappingKeyTypeInconsistent)?;
    Ok(WrappingKey::Card {
        blob: card_key.blob.clone(),
        policy: card_key.policy.clone(),
    })
}

/// True if any private key of the token, visible or not, has this modulus
/// and may decrypt.
fn private_half_decrypts(objects: &ObjectTable, modulus: &[u8]) -> bool {
    let mut template = AttrMap::new();
    template.insert(CKA_CLASS, mesign_proto::attr::ulong_value(CKO_PRIVATE_KEY));
    template.insert(CKA_MODULUS, modulus.to_vec());
    template.insert(CKA_DECRYPT, mesign_proto::attr::bool_value(true));
    !objects.find(&template, |_| true).is_empty()
}

/// The card key of `target` if `wrapper` may wrap it with `mechanism`.
fn wrappable<'a>(
    wrapper: &Object,
    target: &'a Object,
    mechanism: &WrapMechanism,
) -> Result<&'a Arc<CardKey>, HsmError> {
    let class = attributes::ulong(&target.attrs, CKA_CLASS);
    let card_key = match (class, &target.card_key) {
        (Some(CKO_SECRET_KEY | CKO_PRIVATE_KEY), Some(card_key)) => card_key,
        _ => return Err(HsmError::KeyNotWrappable),
    };
    if attributes::flag(&target.attrs, CKA_EXTRACTABLE) != Some(true) {
        return Err(HsmError::KeyUnextractable);
    }
    // A trusted key is what guarded keys leave under: it never leaves
    // itself (a key stored before this rule included).
    if attributes::flag(&target.attrs, CKA_TRUSTED) == Some(true) {
        return Err(HsmError::KeyNotWrappable);
    }
    // Trust counts only on a key that may carry it (see
    // `attributes::may_be_trusted`): one marked before that rule does not.
    let trusted = attributes::flag(&wrapper.attrs, CKA_TRUSTED) == Some(true)
        && attributes::may_be_trusted(&wrapper.attrs);
    if attributes::flag(&target.attrs, CKA_WRAP_WITH_TRUSTED) == Some(true) && !trusted {
        return Err(HsmError::KeyNotWrappable);
    }
    if let Some(nested) = wrapper.attrs.get(&CKA_WRAP_TEMPLATE) {
        let required =
            mesign_proto::attr::read_attribute_array(nested).ok_or(HsmError::Internal)?;
        let required: AttrMap = required.into_iter().map(|a| (a.ty, a.value)).collect();
        if !attributes::matches(&target.attrs, &required) {
            return Err(HsmError::KeyNotWrappable);
        }
    }
    if matches!(mechanism, WrapMechanism::RsaOaep { .. }) && class != Some(CKO_SECRET_KEY) {
        // A PKCS#8 document does not fit one RSA block.
        return Err(HsmError::KeyNotWrappable);
    }
    Ok(card_key)
}

/// The unwrapping key's card key, after the key and the wrapped length
/// are checked against the mechanism.
fn unwrapping_key(
    unwrapper: &Object,
    mechanism: &WrapMechanism,
    wrapped_len: usize,
) -> Result<Arc<CardKey>, HsmError> {
    check_key(
        unwrapper,
        mechanism,
        CKA_UNWRAP,
        HsmError::UnwrappingKeyTypeInconsistent,
    )?;
    let card_key = unwrapper
        .card_key
        .clone()
        .ok_or(HsmError::UnwrappingKeyTypeInconsistent)?;
    let length_fits = match card_key.policy.spec {
        card::KeySpec::Rsa { bits } => wrapped_len == bits as usize / 8,
        card::KeySpec::Aes { bytes: 24 } => return Err(HsmError::UnwrappingKeySizeRange),
        _ => wrapped_len >= KW_MIN_LEN && wrapped_len % 8 == 0,
    };
    if !length_fits {
        return Err(HsmError::WrappedKeyLenRange(wrapped_len));
    }
    Ok(card_key)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{PinPolicy, Slot};
    use super::*;
    use crate::card::fake::FakeCard;
    use mesign_proto::{attr, ReplyBody, RequestBody};

    const USER: AppKey = AppKey { pid: 1, app: 1 };
    const SO: AppKey = AppKey { pid: 2, app: 1 };

    fn ok(h: &Hsm, app: AppKey, body: RequestBody) -> ReplyBody {
        h.handle(app, body.clone())
            .unwrap_or_else(|e| panic!("{body:?}: {e}"))
    }

    fn rv(h: &Hsm, app: AppKey, body: RequestBody) -> u64 {
        h.handle(app, body).expect_err("expected an error").rv()
    }

    fn open(h: &Hsm, app: AppKey) -> u64 {
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        match ok(h, app, RequestBody::OpenSession { slot: 0, flags }) {
            ReplyBody::Session(s) => s,
            other => panic!("{other:?}"),
        }
    }

    fn login(h: &Hsm, app: AppKey, session: u64, user_type: u64, pin: &[u8]) {
        ok(
            h,
            app,
            RequestBody::Login {
                session,
                user_type,
                pin: pin.to_vec(),
            },
        );
    }

    /// A token with the user logged in (application USER) and the SO
    /// logged in (application SO), on a fake card.
    fn ready(dir: &std::path::Path) -> (Hsm, Arc<FakeCard>, u64, u64) {
        let card = Arc::new(FakeCard::default());
        let slot = Slot::open(card.clone(), &dir.join("slot-0/token.redb")).unwrap();
        let pins = PinPolicy {
            iterations: 1,
            ..PinPolicy::default()
        };
        let h = Hsm::new(pins, vec![slot]);
        h.connect(USER);
        h.connect(SO);
        ok(
            &h,
            USER,
            RequestBody::InitToken {
                slot: 0,
                so_pin: b"sopin".to_vec(),
                label: b"t".to_vec(),
            },
        );
        let so = open(&h, SO);
        login(&h, SO, so, CKU_SO, b"sopin");
        ok(
            &h,
            SO,
            RequestBody::InitPin {
                session: so,
                pin: b"1234".to_vec(),
            },
        );
        let user = open(&h, USER);
        login(&h, USER, user, CKU_USER, b"1234");
        (h, card, user, so)
    }

    fn a(ty: u64, value: Vec<u8>) -> Attribute {
        Attribute { ty, value }
    }

    fn yes(ty: u64) -> Attribute {
        a(ty, attr::bool_value(true))
    }

    fn aes(h: &Hsm, session: u64, extra: Vec<Attribute>) -> u64 {
        let mut template = vec![
            a(CKA_CLASS, attr::ulong_value(CKO_SECRET_KEY)),
            a(CKA_KEY_TYPE, attr::ulong_value(CKK_AES)),
            a(CKA_VALUE, vec![7; 32]),
        ];
        template.extend(extra);
        match ok(h, USER, RequestBody::CreateObject { session, template }) {
            ReplyBody::Object(handle) => handle,
            other => panic!("{other:?}"),
        }
    }

    fn wrap(session: u64, wrapping: u64, key: u64) -> RequestBody {
        RequestBody::WrapKey {
            session,
            mechanism: WrapMechanism::AesKeyWrap,
            wrapping,
            key,
        }
    }

    #[test]
    fn wrap_with_trusted_needs_a_key_the_so_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (h, card, user, so) = ready(dir.path());
        // A public token key, so that the SO sees it.
        let public_wrapping = vec![
            yes(CKA_WRAP),
            yes(CKA_TOKEN),
            a(CKA_PRIVATE, attr::bool_value(false)),
        ];
        // Only a key generated here and never extractable may be trusted.
        let mut generate = vec![a(CKA_VALUE_LEN, attr::ulong_value(32))];
        generate.extend(public_wrapping.clone());
        let ReplyBody::Object(trusted) = ok(
            &h,
            USER,
            RequestBody::GenerateKey {
                session: user,
                mechanism: CKM_AES_KEY_GEN,
                template: generate,
            },
        ) else {
            panic!("no key generated")
        };
        let untrusted = aes(&h, user, public_wrapping);
        let guarded = aes(
            &h,
            user,
            vec![yes(CKA_EXTRACTABLE), yes(CKA_WRAP_WITH_TRUSTED)],
        );
        let set_trusted = |session, key| RequestBody::SetAttributes {
            session,
            object: key,
            template: vec![yes(CKA_TRUSTED)],
        };
        assert_eq!(
            rv(&h, USER, set_trusted(user, untrusted)),
            CKR_ATTRIBUTE_READ_ONLY,
            "only the SO marks keys trusted"
        );
        assert_eq!(
            rv(&h, SO, set_trusted(so, untrusted)),
            CKR_ATTRIBUTE_VALUE_INVALID,
            "an imported key (of known value) is never trusted"
        );
        ok(&h, SO, set_trusted(so, trusted));
        let sent = || card.requests.lock().unwrap().len();
        let before = sent();
        assert_eq!(
            rv(&h, USER, wrap(user, untrusted, guarded)),
            CKR_KEY_NOT_WRAPPABLE
        );
        assert_eq!(sent(), before, "refused before the card is asked");
        assert!(matches!(
            ok(&h, USER, wrap(user, trusted, guarded)),
            ReplyBody::Bytes(_)
        ));
        let Some(CardRequest::WrapKey { policy, .. }) =
            card.requests.lock().unwrap().last().cloned()
        else {
            panic!("no WrapKey sent")
        };
        assert!(
            policy.extractable,
            "the card gets the target's bound policy"
        );
        // CKA_WRAP_WITH_TRUSTED does not go back to false.
        let downgrade = RequestBody::SetAttributes {
            session: user,
            object: guarded,
            template: vec![a(CKA_WRAP_WITH_TRUSTED, attr::bool_value(false))],
        };
        assert_eq!(rv(&h, USER, downgrade), CKR_ATTRIBUTE_READ_ONLY);
    }

    /// Edits a stored object's attributes, as if a version without
    /// today's rules had stored them.
    fn tamper(h: &Hsm, handle: u64, changes: &[(u64, bool)]) {
        let (id, _) = crate::objects::split_handle(handle);
        let mut state = h.slots[0].write();
        let mut object = state.objects.get(id).unwrap().clone();
        for &(ty, value) in changes {
            object.attrs.insert(ty, attr::bool_value(value));
        }
        state.objects.insert(id, object);
    }

    #[test]
    fn trusted_keys_are_never_wrapped_and_old_trust_on_known_keys_counts_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (h, card, user, _) = ready(dir.path());
        let kek = aes(&h, user, vec![yes(CKA_WRAP)]);
        let marked = aes(&h, user, vec![yes(CKA_EXTRACTABLE)]);
        tamper(&h, marked, &[(CKA_TRUSTED, true)]);
        // An imported (known) wrapping key marked trusted before the
        // rule: a guarded key does not leave under it.
        let known = aes(&h, user, vec![yes(CKA_WRAP)]);
        tamper(&h, known, &[(CKA_TRUSTED, true)]);
        let guarded = aes(
            &h,
            user,
            vec![yes(CKA_EXTRACTABLE), yes(CKA_WRAP_WITH_TRUSTED)],
        );
        let sent = || card.requests.lock().unwrap().len();
        let before = sent();
        assert_eq!(rv(&h, USER, wrap(user, kek, marked)), CKR_KEY_NOT_WRAPPABLE);
        assert_eq!(
            rv(&h, USER, wrap(user, known, guarded)),
            CKR_KEY_NOT_WRAPPABLE
        );
        assert_eq!(sent(), before, "refused before the card is asked");
    }

    #[test]
    fn a_stored_key_with_conflicting_roles_neither_wraps_nor_unwraps() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _, user, _) = ready(dir.path());
        let kek = aes(&h, user, vec![yes(CKA_WRAP), yes(CKA_UNWRAP)]);
        let data = aes(&h, user, vec![yes(CKA_EXTRACTABLE)]);
        assert!(matches!(
            ok(&h, USER, wrap(user, kek, data)),
            ReplyBody::Bytes(_)
        ));
        // As if stored by a version without the rule: CKA_DECRYPT added.
        {
            let (id, _) = crate::objects::split_handle(kek);
            let mut state = h.slots[0].write();
            let mut object = state.objects.get(id).unwrap().clone();
            object.attrs.insert(CKA_DECRYPT, attr::bool_value(true));
            state.objects.insert(id, object);
        }
        assert_eq!(
            rv(&h, USER, wrap(user, kek, data)),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        let unwrap = RequestBody::UnwrapKey {
            session: user,
            mechanism: WrapMechanism::AesKeyWrap,
            unwrapping: kek,
            wrapped: vec![1; 24],
            template: vec![
                a(CKA_CLASS, attr::ulong_value(CKO_SECRET_KEY)),
                a(CKA_KEY_TYPE, attr::ulong_value(CKK_AES)),
            ],
        };
        assert_eq!(rv(&h, USER, unwrap), CKR_KEY_FUNCTION_NOT_PERMITTED);
    }

    #[test]
    fn wrapping_and_unwrapping_keys_are_checked_before_the_card() {
        let dir = tempfile::tempdir().unwrap();
        let (h, card, user, _) = ready(dir.path());
        let kek = aes(&h, user, vec![yes(CKA_WRAP), yes(CKA_UNWRAP)]);
        let data = aes(&h, user, vec![yes(CKA_EXTRACTABLE)]);
        let locked = aes(&h, user, vec![]);
        let sent = || card.requests.lock().unwrap().len();
        let before = sent();
        for (body, want) in [
            (wrap(user, data, kek), CKR_KEY_FUNCTION_NOT_PERMITTED),
            (wrap(user, kek, locked), CKR_KEY_UNEXTRACTABLE),
            (wrap(user, 0x7777, data), CKR_WRAPPING_KEY_HANDLE_INVALID),
            (wrap(user, kek, 0x7777), CKR_KEY_HANDLE_INVALID),
            (
                RequestBody::WrapKey {
                    session: user,
                    mechanism: WrapMechanism::RsaOaep {
                        hash: HashAlg::Sha1,
                        mgf_hash: HashAlg::Sha1,
                        label: vec![],
                    },
                    wrapping: kek,
                    key: data,
                },
                CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
            ),
        ] {
            assert_eq!(rv(&h, USER, body.clone()), want, "{body:?}");
        }
        let unwrap =
            |unwrapping, wrapped: Vec<u8>, template: Vec<Attribute>| RequestBody::UnwrapKey {
                session: user,
                mechanism: WrapMechanism::AesKeyWrapPad,
                unwrapping,
                wrapped,
                template,
            };
        let aes_template = || {
            vec![
                a(CKA_CLASS, attr::ulong_value(CKO_SECRET_KEY)),
                a(CKA_KEY_TYPE, attr::ulong_value(CKK_AES)),
            ]
        };
        for (body, want) in [
            (
                unwrap(data, vec![1; 40], aes_template()),
                CKR_KEY_FUNCTION_NOT_PERMITTED,
            ),
            (
                unwrap(kek, vec![1; 41], aes_template()),
                CKR_WRAPPED_KEY_LEN_RANGE,
            ),
            (
                unwrap(kek, vec![1; 8], aes_template()),
                CKR_WRAPPED_KEY_LEN_RANGE,
            ),
            (
                unwrap(0x7777, vec![1; 40], aes_template()),
                CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            ),
            (unwrap(kek, vec![1; 40], vec![]), CKR_TEMPLATE_INCOMPLETE),
            // Unwrap-then-wrap: no extractable key without the unwrapping
            // key's CKA_UNWRAP_TEMPLATE saying so.
            (
                unwrap(
                    kek,
                    vec![1; 40],
                    [aes_template(), vec![yes(CKA_EXTRACTABLE)]].concat(),
                ),
                CKR_TEMPLATE_INCONSISTENT,
            ),
        ] {
            assert_eq!(rv(&h, USER, body.clone()), want, "{body:?}");
        }
        assert_eq!(sent(), before, "refused requests must not reach the card");
        let ReplyBody::Object(new) = ok(&h, USER, unwrap(kek, vec![1; 40], aes_template())) else {
            panic!("no object")
        };
        let ReplyBody::Attributes(values) = ok(
            &h,
            USER,
            RequestBody::GetAttributes {
                session: user,
                object: new,
                types: vec![
                    CKA_VALUE_LEN,
                    CKA_LOCAL,
                    CKA_SENSITIVE,
                    CKA_NEVER_EXTRACTABLE,
                ],
            },
        ) else {
            panic!("no attributes")
        };
        use mesign_proto::AttributeValue::Value;
        assert_eq!(
            values,
            vec![
                Value(attr::ulong_value(32)),
                Value(attr::bool_value(false)),
                Value(attr::bool_value(true)),
                Value(attr::bool_value(false)),
            ]
        );
        *card.fail_next.lock().unwrap() = Some(CardFailure::Fault(CardFault::BadInput));
        assert_eq!(
            rv(&h, USER, unwrap(kek, vec![1; 40], aes_template())),
            CKR_WRAPPED_KEY_INVALID
        );
    }
}
