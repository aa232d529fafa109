//! C_SignInit / C_Sign / C_SignUpdate / C_SignFinal (PKCS#11 3.0 §5.12).
//!
//! The key's metadata is fetched once at init, so length queries never
//! reach the daemon and a too-small buffer is refused before the card
//! works. Hash-and-sign mechanisms hash in the module and send only the
//! digest: every signature is exactly one `Sign` round trip.

use aws_lc_rs::digest::Context;
use cryptoki_sys::*;
use mesign_proto::{HashAlg, ReplyBody, RequestBody, MAX_DATA, MAX_EDDSA_MESSAGE};

use crate::digest::algorithm;
use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, Fill, OutBuf};
use crate::library::Library;
use crate::mechanism::{sign_mechanism, SignKind, SignMechanism};
use crate::sessions::{drive, ensure_idle, Step};
use crate::symmetric;
use crate::verify::parse_digest_info;

/// An active signing operation.
pub(crate) struct SignOp {
    key: CK_OBJECT_HANDLE,
    mechanism: SignMechanism,
    /// The signature length, known from the key's modulus or curve.
    signature_len: usize,
    /// For hash-and-sign mechanisms: the running hash.
    hasher: Option<Context>,
    /// C_SignUpdate was called, so C_Sign is no longer allowed.
    multi_part: bool,
    /// The key has CKA_ALWAYS_AUTHENTICATE and no C_Login
    /// (CKU_CONTEXT_SPECIFIC) has authorised this operation yet.
    awaiting_context_login: bool,
    /// A context-specific login authorised this operation and the daemon
    /// holds it until a signature uses it: an operation that ends without
    /// one must tell the daemon to drop it (see [`end_unused_context_login`]).
    context_granted: bool,
}

impl SignOp {
    fn start(
        lib: &Library,
        session: CK_SESSION_HANDLE,
        slot: CK_SLOT_ID,
        mechanism: SignMechanism,
        key: CK_OBJECT_HANDLE,
    ) -> Result<Self, Error> {
        check_signable(&mechanism)?;
        let attrs = lib.keys.attrs(lib, session, slot, key, CKA_SIGN)?;
        attrs.check(CKO_PRIVATE_KEY, &mechanism)?;
        lib.daemon.learn_key(session, key);
        Ok(SignOp {
            key,
            mechanism,
            signature_len: attrs.signature_len(mechanism.family())?,
            hasher: mechanism.module_hash().map(|h| Context::new(algorithm(h))),
            multi_part: false,
            awaiting_context_login: attrs.always_authenticate == Some(true),
            context_granted: false,
        })
    }

    /// Whether C_Login(CKU_CONTEXT_SPECIFIC) applies: the key needs it and
    /// no context login has authorised this operation yet (as SoftHSMv2;
    /// otherwise a grant could sit unused in the daemon).
    pub(crate) fn awaits_context_login(&self) -> bool {
        self.awaiting_context_login
    }

    /// A successful C_Login(CKU_CONTEXT_SPECIFIC) authorises this operation.
    pub(crate) fn context_login_done(&mut self) {
        self.awaiting_context_login = false;
        self.context_granted = true;
    }

    /// Refused locally, before any data is hashed or sent, like SoftHSMv2;
    /// the daemon enforces the same rule on its side.
    fn check_authorised(&self) -> Result<(), Error> {
        if self.awaiting_context_login {
            Err(Error::ContextLoginRequired)
        } else {
            Ok(())
        }
    }

    /// The card's input for single-part data: the digest for hash-and-sign
    /// mechanisms, else the data after the mechanism's length rules.
    fn input(&self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let too_long = Error::DataLenRange { len: data.len() };
        match self.mechanism.kind {
            SignKind::RsaPkcs if data.len() + 11 > self.signature_len => Err(too_long),
            // The card signs a DigestInfo by re-encoding its digest, so it
            // must be one of the hashes it signs with.
            SignKind::RsaPkcs => match parse_digest_info(data) {
                Some((h, _)) if card_signs_with(h) => Ok(data.to_vec()),
                _ => Err(Error::DataInvalid),
            },
            SignKind::RsaPss(p) if data.len() != p.hash.len() => Err(too_long),
            SignKind::Ecdsa if data.is_empty() || data.len() > MAX_DATA => Err(too_long),
            SignKind::Eddsa if data.len() > MAX_EDDSA_MESSAGE => Err(too_long),
            SignKind::RsaPss(_) | SignKind::Ecdsa | SignKind::Eddsa => Ok(data.to_vec()),
            SignKind::RsaPkcsHashed(_) | SignKind::RsaPssHashed(_) | SignKind::EcdsaHashed(_) => {
                let mut ctx = self.hasher.clone().ok_or(Error::OperationNotInitialized)?;
                ctx.update(data);
                Ok(ctx.finish().as_ref().to_vec())
            }
        }
    }

    /// Signs `input` on the card and hands the signature out.
    fn sign(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        input: Vec<u8>,
        out: &mut OutBuf<u8>,
    ) -> Result<Step, Error> {
        let request = RequestBody::Sign {
            session,
            key: self.key,
            mechanism: self.mechanism.ty,
            scheme: self.mechanism.scheme(),
            input,
        };
        match lib.daemon.sign(request)? {
            ReplyBody::Bytes(signature) => {
                out.put(&signature)?;
                Ok(Step::Finished)
            }
            _ => Err(Error::Transport),
        }
    }
}

/// Tells the daemon to drop the context-specific login `op` was granted, if
/// it had one: the operation is ending without the signature that would
/// have used it, and the grant must not authorise a later operation.
pub(crate) fn end_unused_context_login(lib: &Library, session: CK_SESSION_HANDLE, op: &SignOp) {
    if op.context_granted {
        drop_context_login(lib, session);
    }
}

pub(crate) fn drop_context_login(lib: &Library, session: CK_SESSION_HANDLE) {
    // Best effort: should the daemon be unreachable, the module still asks
    // every new operation for a context login of its own.
    let _ = crate::session::done(lib, RequestBody::DropContextLogin { session });
}

/// [`drive`] for signing steps. An operation that a step ends with an error
/// releases its unused context-specific login (a signature that succeeded
/// used it up in the daemon); a key the daemon says needs a login the
/// cached metadata did not expect is fetched afresh at the next C_SignInit.
fn drive_sign(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    slot: &mut Option<SignOp>,
    step: impl FnOnce(&mut SignOp) -> Result<Step, Error>,
) -> Result<(), Error> {
    let Some((key, granted)) = slot.as_ref().map(|op| (op.key, op.context_granted)) else {
        return drive(slot, step);
    };
    let result = drive(slot, step);
    if granted && slot.is_none() && result.is_err() {
        drop_context_login(lib, session);
    }
    if result == Err(Error::Daemon(CKR_USER_NOT_LOGGED_IN)) {
        lib.keys.forget(key);
    }
    result
}

/// Whether the token signs with `hash`: not with SHA-1 (NIST SP 800-131A
/// disallows SHA-1 for signature generation), nor with SHA-224 (the card's
/// aws-lc-rs has no SHA-224 RSA encoding, and the token lists no SHA-224
/// mechanism). Verification of such signatures is still offered.
fn card_signs_with(hash: HashAlg) -> bool {
    !matches!(hash, HashAlg::Sha1 | HashAlg::Sha224)
}

/// Refuses at C_SignInit what the card would refuse at C_Sign: the
/// mechanisms it does not list (SHA-1 and SHA-224 hash-and-sign) with
/// `CKR_MECHANISM_INVALID`, and PSS parameters other than MGF1 over the
/// message hash with a salt as long as that hash with
/// `CKR_MECHANISM_PARAM_INVALID`.
fn check_signable(m: &SignMechanism) -> Result<(), Error> {
    match m.kind {
        SignKind::RsaPkcsHashed(h) | SignKind::EcdsaHashed(h) if !card_signs_with(h) => {
            Err(Error::MechanismInvalid(m.ty))
        }
        SignKind::RsaPssHashed(p) if !card_signs_with(p.hash) => Err(Error::MechanismInvalid(m.ty)),
        SignKind::RsaPss(p) | SignKind::RsaPssHashed(p)
            if !card_signs_with(p.hash)
                || p.mgf_hash != p.hash
                || p.salt_len as usize != p.hash.len() =>
        {
            Err(Error::MechanismParamInvalid(m.ty))
        }
        _ => Ok(()),
    }
}

pub(crate) extern "C" fn fn_c_sign_init(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        let raw = ffi::mechanism(mechanism)?;
        if symmetric::mac_len(raw.ty).is_some() {
            return symmetric::mac_init(lib, session, &raw, key, true);
        }
        let mechanism = sign_mechanism(&raw)?;
        lib.sessions.with(session, |s| {
            ensure_idle(&s.sign)?;
            ensure_idle(&s.secret.sign)?;
            s.sign = Some(SignOp::start(lib, session, s.slot, mechanism, key)?);
            Ok(())
        })?
    })
}

pub(crate) extern "C" fn fn_c_sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.sign.is_some() {
                let output = (signature, signature_len);
                return symmetric::mac_sign(lib, session, s, Some((data, data_len)), output);
            }
            drive_sign(lib, session, &mut s.sign, |op| {
                if op.multi_part {
                    return Err(Error::OperationActive);
                }
                let mut out = OutBuf::new(signature, signature_len)?;
                if out.prepare(op.signature_len)? == Fill::LengthOnly {
                    return Ok(Step::Continue);
                }
                op.check_authorised()?;
                let input = op.input(ffi::input(data, data_len)?)?;
                op.sign(lib, session, input, &mut out)
            })
        })?
    })
}

/// Only hash-and-sign mechanisms are multi-part; like SoftHSMv2, the raw
/// ones (CKM_RSA_PKCS, CKM_RSA_PKCS_PSS, CKM_ECDSA) answer
/// `CKR_FUNCTION_NOT_SUPPORTED` and end the operation.
pub(crate) extern "C" fn fn_c_sign_update(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.sign.is_some() {
                return symmetric::mac_update(&mut s.secret.sign, (part, part_len));
            }
            drive_sign(lib, session, &mut s.sign, |op| {
                op.check_authorised()?;
                let hasher = op.hasher.as_mut().ok_or(Error::FunctionNotSupported)?;
                hasher.update(ffi::input(part, part_len)?);
                op.multi_part = true;
                Ok(Step::Continue)
            })
        })?
    })
}

pub(crate) extern "C" fn fn_c_sign_final(
    session: CK_SESSION_HANDLE,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            if s.secret.sign.is_some() {
                let output = (signature, signature_len);
                return symmetric::mac_sign(lib, session, s, None, output);
            }
            drive_sign(lib, session, &mut s.sign, |op| {
                let hasher = op.hasher.clone().ok_or(Error::FunctionNotSupported)?;
                let mut out = OutBuf::new(signature, signature_len)?;
                if out.prepare(op.signature_len)? == Fill::LengthOnly {
                    return Ok(Step::Continue);
                }
                op.check_authorised()?;
                op.sign(lib, session, hasher.finish().as_ref().to_vec(), &mut out)
            })
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::{KeyFamily, Pss};
    use mesign_proto::HashAlg;

    fn op(kind: SignKind, signature_len: usize) -> SignOp {
        let mechanism = SignMechanism {
            ty: CKM_ECDSA,
            kind,
        };
        SignOp {
            key: 1,
            mechanism,
            signature_len,
            hasher: mechanism.module_hash().map(|h| Context::new(algorithm(h))),
            multi_part: false,
            awaiting_context_login: false,
            context_granted: false,
        }
    }

    #[test]
    fn raw_inputs_follow_the_mechanism_length_rules() {
        let rsa = op(SignKind::RsaPkcs, 256);
        let mut info = crate::verify::tests::digest_info(HashAlg::Sha256);
        assert_eq!(rsa.input(&info).unwrap(), info);
        assert_eq!(
            rsa.input(&[1; 246]).unwrap_err(),
            Error::DataLenRange { len: 246 }
        );
        // Not a DigestInfo, or one of SHA-1 (what pkcs11-tool --test sends).
        assert_eq!(rsa.input(&[1; 245]).unwrap_err(), Error::DataInvalid);
        info.push(0);
        assert_eq!(rsa.input(&info).unwrap_err(), Error::DataInvalid);
        let sha1 = crate::verify::tests::digest_info(HashAlg::Sha1);
        assert_eq!(rsa.input(&sha1).unwrap_err(), Error::DataInvalid);
        let pss = Pss {
            hash: HashAlg::Sha256,
            mgf_hash: HashAlg::Sha256,
            salt_len: 32,
        };
        let pss = op(SignKind::RsaPss(pss), 256);
        assert!(pss.input(&[0; 32]).is_ok());
        assert!(pss.input(&[0; 33]).is_err());
        let ecdsa = op(SignKind::Ecdsa, 64);
        assert_eq!(ecdsa.input(&[7; 20]).unwrap(), vec![7; 20]);
        // Pure EdDSA sends the message itself, empty or up to a card slot.
        let eddsa = op(SignKind::Eddsa, 64);
        assert_eq!(eddsa.input(b"").unwrap(), b"");
        assert_eq!(eddsa.input(b"doc").unwrap(), b"doc");
        let long = vec![1; MAX_EDDSA_MESSAGE + 1];
        assert_eq!(
            eddsa.input(&long).unwrap_err(),
            Error::DataLenRange { len: long.len() }
        );
    }

    #[test]
    fn hash_and_sign_sends_the_digest() {
        let op = op(SignKind::EcdsaHashed(HashAlg::Sha384), 96);
        let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, b"abc");
        assert_eq!(op.input(b"abc").unwrap(), expected.as_ref());
        assert_eq!(op.mechanism.family(), KeyFamily::Ec);
    }

    #[test]
    fn unsigned_hashes_and_pss_shapes_are_refused_at_init() {
        let m = |ty, kind| SignMechanism { ty, kind };
        let pss = |hash, mgf_hash, salt_len| Pss {
            hash,
            mgf_hash,
            salt_len,
        };
        use HashAlg::*;
        for (ty, kind) in [
            (CKM_SHA1_RSA_PKCS, SignKind::RsaPkcsHashed(Sha1)),
            (CKM_SHA224_RSA_PKCS, SignKind::RsaPkcsHashed(Sha224)),
            (CKM_ECDSA_SHA1, SignKind::EcdsaHashed(Sha1)),
            (
                CKM_SHA1_RSA_PKCS_PSS,
                SignKind::RsaPssHashed(pss(Sha1, Sha1, 20)),
            ),
        ] {
            assert_eq!(
                check_signable(&m(ty, kind)),
                Err(Error::MechanismInvalid(ty))
            );
        }
        for p in [
            pss(Sha1, Sha1, 20),
            pss(Sha256, Sha1, 32),
            pss(Sha256, Sha256, 20),
        ] {
            assert_eq!(
                check_signable(&m(CKM_RSA_PKCS_PSS, SignKind::RsaPss(p))),
                Err(Error::MechanismParamInvalid(CKM_RSA_PKCS_PSS))
            );
        }
        assert_eq!(
            check_signable(&m(
                CKM_SHA384_RSA_PKCS_PSS,
                SignKind::RsaPssHashed(pss(Sha384, Sha384, 48))
            )),
            Ok(())
        );
        assert_eq!(
            check_signable(&m(CKM_ECDSA_SHA256, SignKind::EcdsaHashed(Sha256))),
            Ok(())
        );
    }
}
