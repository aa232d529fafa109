//! Secret-key operations: C_GenerateKey (PKCS#11 3.0 §5.14) with
//! CKM_AES_KEY_GEN and CKM_GENERIC_SECRET_KEY_GEN; C_Encrypt / C_Decrypt
//! (§5.8, §5.9) with CKM_AES_GCM, CKM_AES_CBC_PAD and CKM_AES_CTR; C_Sign /
//! C_Verify (§5.12, §5.13) with CKM_AES_CMAC and CKM_SHA{256,384,512}_HMAC.
//!
//! A secret key is secret from the module too, so everything here is a
//! request to the daemon and the card; the module checks parameters and the
//! key's metadata at *Init (one GetAttributes, cached for token keys) and
//! answers length queries without a round trip.
//!
//! The ciphers are also multi-part (C_EncryptUpdate / C_DecryptUpdate /
//! …Final), in the way that keeps the key on the card and the least data
//! here:
//! - CKM_AES_CBC_PAD and CKM_AES_CTR stream through the card: each update
//!   sends its whole blocks (split into requests of at most
//!   [`MAX_SYMMETRIC_INPUT`] bytes) and returns their output at once; the
//!   module keeps only the chaining value (CBC: the last ciphertext block;
//!   CTR: the counter block, which is public) and less than one block of
//!   input (CBC-PAD decryption holds back up to one whole block, since
//!   the last block carries the padding). Any total length works; a CTR
//!   counter that would wrap is CKR_DATA_LEN_RANGE.
//! - CKM_AES_GCM collects the parts here (in zeroizing memory) and sends
//!   them at C_EncryptFinal / C_DecryptFinal: aws-lc-rs's GCM is one-shot,
//!   and decryption must not release plaintext before the tag is checked
//!   anyway (PKCS#11 3.0's AES-GCM section allows buffering until
//!   Final). Updates return no output; the total is limited to
//!   [`MAX_SYMMETRIC_INPUT`].
//!
//! A single-part C_Encrypt / C_Decrypt after an update is
//! CKR_OPERATION_ACTIVE. MACs are multi-part too: C_SignUpdate /
//! C_VerifyUpdate collect the data here and C_SignFinal / C_VerifyFinal
//! send it in one request (at most
//! [`MAX_SYMMETRIC_INPUT`] bytes, CKR_DATA_LEN_RANGE beyond). Verification
//! happens on the card, which compares in constant time.

use cryptoki_sys::*;
use mesign_proto::{CipherParams, ReplyBody, RequestBody};
use zeroize::Zeroizing;

use crate::attributes::template_to_wire;
use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, write_out, Fill, OutBuf, RawMechanism, Template};
use crate::library::Library;
use crate::sessions::{drive, ensure_idle, Session, Step};

/// The most data one cipher or MAC request carries (the card's limit).
pub(crate) const MAX_SYMMETRIC_INPUT: usize = 48 * 1024;

const AES_BLOCK: usize = 16;
const GCM_TAG_LEN: usize = 16;

/// The secret-key operations of one session, beside the key-pair ones in
/// [`Session`]; each kind shares "one operation per kind" with its
/// key-pair counterpart.
#[derive(Default)]
pub(crate) struct SecretOps {
    pub encrypt: Option<CipherOp>,
    pub decrypt: Option<CipherOp>,
    pub sign: Option<MacOp>,
    pub verify: Option<MacOp>,
}

impl SecretOps {
    /// C_SessionCancel: ends the operations of the kinds `flags` names.
    pub(crate) fn cancel(&mut self, flags: CK_FLAGS) {
        if flags & CKF_ENCRYPT != 0 {
            self.encrypt = None;
        }
        if flags & CKF_DECRYPT != 0 {
            self.decrypt = None;
        }
        if flags & CKF_SIGN != 0 {
            self.sign = None;
        }
        if flags & CKF_VERIFY != 0 {
            self.verify = None;
        }
    }
}

/// An active AES encryption or decryption.
pub(crate) struct CipherOp {
    key: CK_OBJECT_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    /// For CBC and CTR, advanced past the parts already processed.
    params: CipherParams,
    /// Input not yet sent to the card (see the module documentation).
    pending: Zeroizing<Vec<u8>>,
    multi_part: bool,
    /// A CTR counter that has used up its counter bits: no more data.
    counter_spent: bool,
}

/// An active HMAC or CMAC signature or verification.
pub(crate) struct MacOp {
    key: CK_OBJECT_HANDLE,
    mechanism: CK_MECHANISM_TYPE,
    mac_len: usize,
    /// Data collected by C_SignUpdate / C_VerifyUpdate.
    data: Zeroizing<Vec<u8>>,
    multi_part: bool,
}

/// True for the AES cipher mechanisms handled here.
pub(crate) fn is_cipher(ty: CK_MECHANISM_TYPE) -> bool {
    matches!(ty, CKM_AES_GCM | CKM_AES_CBC_PAD | CKM_AES_CTR)
}

/// The MAC length of a MAC mechanism handled here.
pub(crate) fn mac_len(ty: CK_MECHANISM_TYPE) -> Option<usize> {
    match ty {
        CKM_AES_CMAC => Some(16),
        CKM_SHA256_HMAC => Some(32),
        CKM_SHA384_HMAC => Some(48),
        CKM_SHA512_HMAC => Some(64),
        _ => None,
    }
}

/// Reads and checks a cipher mechanism's parameter: a 12-byte IV and a
/// 128-bit tag for GCM (aws-lc-rs offers no other), a 16-byte IV for CBC,
/// a counter of 1 to 128 bits for CTR.
pub(crate) fn cipher_params(raw: &RawMechanism) -> Result<CipherParams, Error> {
    let invalid = Error::MechanismParamInvalid(raw.ty);
    match raw.ty {
        CKM_AES_GCM => {
            let p = raw.gcm_params()?;
            if p.iv.len() != 12 || p.tag_bits != 128 {
                return Err(invalid);
            }
            Ok(CipherParams::AesGcm {
                iv: p.iv,
                aad: p.aad,
                tag_bits: p.tag_bits,
            })
        }
        CKM_AES_CBC_PAD => {
            let iv = raw.bytes_parameter()?;
            if iv.len() != AES_BLOCK {
                return Err(invalid);
            }
            Ok(CipherParams::AesCbcPad { iv })
        }
        CKM_AES_CTR => {
            let p = raw.ctr_params()?;
            if !(1..=128).contains(&p.ulCounterBits) {
                return Err(invalid);
            }
            Ok(CipherParams::AesCtr {
                counter: p.cb.to_vec(),
                counter_bits: p.ulCounterBits,
            })
        }
        ty => Err(Error::MechanismInvalid(ty)),
    }
}

/// The checks every secret-key *Init makes on the key: the usage attribute
/// is true, it is a secret key of `key_type`, and the mechanism is allowed.
fn check_key(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    slot: CK_SLOT_ID,
    key: CK_OBJECT_HANDLE,
    usage: CK_ATTRIBUTE_TYPE,
    mechanism: CK_MECHANISM_TYPE,
) -> Result<(), Error> {
    let attrs = lib.keys.attrs(lib, session, slot, key, usage)?;
    if attrs.usage != Some(true) {
        return Err(Error::KeyFunctionNotPermitted);
    }
    let key_type = match mechanism {
        CKM_SHA256_HMAC | CKM_SHA384_HMAC | CKM_SHA512_HMAC => CKK_GENERIC_SECRET,
        _ => CKK_AES,
    };
    if attrs.class != Some(CKO_SECRET_KEY) || attrs.key_type != Some(key_type) {
        return Err(Error::KeyTypeInconsistent);
    }
    match &attrs.allowed {
        Some(list) if !list.is_empty() && !list.contains(&mechanism) => {
            Err(Error::MechanismInvalid(mechanism))
        }
        _ => Ok(()),
    }
}

/// C_EncryptInit / C_DecryptInit with an AES mechanism.
pub(crate) fn cipher_init(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    raw: &RawMechanism,
    key: CK_OBJECT_HANDLE,
    encrypt: bool,
) -> Result<(), Error> {
    let params = cipher_params(raw)?;
    lib.sessions.with(session, |s| {
        let usage = if encrypt {
            ensure_idle(&s.encrypt)?;
            ensure_idle(&s.secret.encrypt)?;
            CKA_ENCRYPT
        } else {
            ensure_idle(&s.decrypt)?;
            ensure_idle(&s.secret.decrypt)?;
            CKA_DECRYPT
        };
        check_key(lib, session, s.slot, key, usage, raw.ty)?;
        let op = Some(CipherOp::new(key, raw.ty, params));
        if encrypt {
            s.secret.encrypt = op;
        } else {
            s.secret.decrypt = op;
        }
        Ok(())
    })?
}

impl CipherOp {
    fn new(key: CK_OBJECT_HANDLE, mechanism: CK_MECHANISM_TYPE, params: CipherParams) -> Self {
        CipherOp {
            key,
            mechanism,
            params,
            pending: Zeroizing::new(Vec::new()),
            multi_part: false,
            counter_spent: false,
        }
    }

    /// The exact ciphertext length, or for decryption a bound on the
    /// plaintext length (CBC padding is only known after decrypting).
    fn output_len(&self, input_len: usize, encrypt: bool) -> Result<usize, Error> {
        let short = Error::EncryptedDataLenRange {
            len: input_len,
            expected: GCM_TAG_LEN,
        };
        Ok(match (&self.params, encrypt) {
            (CipherParams::AesGcm { .. }, true) => input_len + GCM_TAG_LEN,
            (CipherParams::AesGcm { .. }, false) => {
                input_len.checked_sub(GCM_TAG_LEN).ok_or(short)?
            }
            (CipherParams::AesCbcPad { .. }, true) => (input_len / AES_BLOCK + 1) * AES_BLOCK,
            (CipherParams::AesCbcPad { .. }, false) => {
                if input_len == 0 || input_len % AES_BLOCK != 0 {
                    return Err(Error::EncryptedDataLenRange {
                        len: input_len,
                        expected: input_len.div_ceil(AES_BLOCK).max(1) * AES_BLOCK,
                    });
                }
                input_len
            }
            (CipherParams::AesCtr { .. }, _) | (CipherParams::AesCbcBlocks { .. }, _) => input_len,
        })
    }

    fn run(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        input: &[u8],
        out: &mut OutBuf<u8>,
        encrypt: bool,
    ) -> Result<Step, Error> {
        let len = self.output_len(input.len(), encrypt)?;
        if input.len() > MAX_SYMMETRIC_INPUT {
            return Err(if encrypt {
                Error::DataLenRange { len: input.len() }
            } else {
                Error::EncryptedDataLenRange {
                    len: input.len(),
                    expected: MAX_SYMMETRIC_INPUT,
                }
            });
        }
        if out.prepare(len)? == Fill::LengthOnly {
            return Ok(Step::Continue);
        }
        let output = self.call(lib, session, self.params.clone(), input, encrypt)?;
        out.put(&output)?;
        Ok(Step::Finished)
    }

    /// One request to the card with `params`.
    fn call(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        params: CipherParams,
        input: &[u8],
        encrypt: bool,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (key, mechanism, input) = (self.key, self.mechanism, input.to_vec());
        let request = if encrypt {
            RequestBody::SecretEncrypt {
                session,
                key,
                mechanism,
                params,
                input,
            }
        } else {
            RequestBody::SecretDecrypt {
                session,
                key,
                mechanism,
                params,
                input,
            }
        };
        match lib.daemon.call(request)? {
            ReplyBody::Bytes(output) => Ok(Zeroizing::new(output)),
            _ => Err(Error::Transport),
        }
    }

    /// How many of the pending bytes (after `more` arrives) an update
    /// sends now: whole blocks for CBC and CTR, keeping CBC-PAD
    /// decryption's last block back; nothing for GCM.
    fn sendable(&self, total: usize, encrypt: bool) -> usize {
        match &self.params {
            CipherParams::AesCbcPad { .. } | CipherParams::AesCbcBlocks { .. } if !encrypt => {
                let keep = match total % AES_BLOCK {
                    0 => total.min(AES_BLOCK),
                    partial => partial,
                };
                total - keep
            }
            CipherParams::AesGcm { .. } => 0,
            _ => total - total % AES_BLOCK,
        }
    }

    /// C_EncryptUpdate / C_DecryptUpdate.
    fn update(
        &mut self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        part: &[u8],
        out: &mut OutBuf<u8>,
        encrypt: bool,
    ) -> Result<Step, Error> {
        let total = self.pending.len() + part.len();
        let send = self.sendable(total, encrypt);
        if let CipherParams::AesGcm { .. } = self.params {
            if total > MAX_SYMMETRIC_INPUT {
                return Err(if encrypt {
                    Error::DataLenRange { len: total }
                } else {
                    Error::EncryptedDataLenRange {
                        len: total,
                        expected: MAX_SYMMETRIC_INPUT,
                    }
                });
            }
        }
        // A length query may answer more than needed (PKCS#11 3.0 §5.2).
        // Answering 0 when a part only fills the buffer here would make
        // callers that then pass an empty buffer (PyKCS11 passes NULL for
        // it) ask again instead of handing the data over, so the bound is
        // never below the part's length.
        if out.is_length_query() {
            out.prepare(send.max(part.len()))?;
            return Ok(Step::Continue);
        }
        out.prepare(send)?;
        self.multi_part = true;
        self.pending.extend_from_slice(part);
        let output = self.send_blocks(lib, session, send, encrypt)?;
        out.put(&output)?;
        Ok(Step::Continue)
    }

    /// Sends the first `len` pending bytes (whole blocks of CBC or CTR)
    /// through the card in requests the card accepts, advancing the
    /// chaining value.
    fn send_blocks(
        &mut self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        len: usize,
        encrypt: bool,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let mut output = Zeroizing::new(Vec::with_capacity(len));
        let data: Zeroizing<Vec<u8>> = Zeroizing::new(self.pending.drain(..len).collect());
        let chunk = MAX_SYMMETRIC_INPUT - MAX_SYMMETRIC_INPUT % AES_BLOCK;
        for piece in data.chunks(chunk) {
            if self.counter_spent {
                return Err(Error::DataLenRange { len: piece.len() });
            }
            let params = match &self.params {
                CipherParams::AesCbcPad { iv } | CipherParams::AesCbcBlocks { iv } => {
                    CipherParams::AesCbcBlocks { iv: iv.clone() }
                }
                other => other.clone(),
            };
            let result = self.call(lib, session, params, piece, encrypt)?;
            self.advance(piece, &result, encrypt);
            output.extend_from_slice(&result);
        }
        Ok(output)
    }

    /// Moves the chaining value past `input` (which gave `output`).
    fn advance(&mut self, input: &[u8], output: &[u8], encrypt: bool) {
        let ciphertext = if encrypt { output } else { input };
        match &mut self.params {
            CipherParams::AesCbcPad { iv } | CipherParams::AesCbcBlocks { iv } => {
                if let Some(last) = ciphertext.len().checked_sub(AES_BLOCK) {
                    *iv = ciphertext[last..].to_vec();
                }
            }
            CipherParams::AesCtr {
                counter,
                counter_bits,
            } => {
                let blocks = input.len().div_ceil(AES_BLOCK) as u128;
                match advance_counter(counter, *counter_bits, blocks) {
                    Some(next) => *counter = next,
                    None => self.counter_spent = true,
                }
            }
            CipherParams::AesGcm { .. } => {}
        }
    }

    /// C_EncryptFinal / C_DecryptFinal: what is pending goes to the card
    /// with the mechanism's own parameters (CBC-PAD pads or unpads, GCM
    /// seals or opens with its tag).
    fn finish(
        &mut self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        out: &mut OutBuf<u8>,
        encrypt: bool,
    ) -> Result<Step, Error> {
        let pending = self.pending.len();
        let len = match (&self.params, encrypt) {
            (CipherParams::AesCbcPad { .. }, false) if pending != AES_BLOCK => {
                return Err(Error::EncryptedDataLenRange {
                    len: pending,
                    expected: AES_BLOCK,
                });
            }
            _ => self.output_len(pending, encrypt)?,
        };
        if out.prepare(len)? == Fill::LengthOnly {
            return Ok(Step::Continue);
        }
        if pending == 0 && matches!(self.params, CipherParams::AesCtr { .. }) {
            out.put(&[])?;
            return Ok(Step::Finished);
        }
        if self.counter_spent {
            return Err(Error::DataLenRange { len: pending });
        }
        let output = self.call(lib, session, self.params.clone(), &self.pending, encrypt)?;
        out.put(&output)?;
        Ok(Step::Finished)
    }
}

/// The CTR counter block `blocks` blocks on, counting only the low
/// `bits` bits; `None` once the counter would wrap (PKCS#11 3.0 §2.10.8
/// leaves wrapping undefined, so it is refused).
fn advance_counter(counter: &[u8], bits: u64, blocks: u128) -> Option<Vec<u8>> {
    let block: [u8; AES_BLOCK] = counter.try_into().ok()?;
    let value = u128::from_be_bytes(block);
    let max = u128::MAX >> (128 - bits.clamp(1, 128));
    let next = (value & max).checked_add(blocks).filter(|n| *n <= max)?;
    Some(((value & !max) | next).to_be_bytes().to_vec())
}

/// C_Encrypt / C_Decrypt for an active AES operation in `slot`.
pub(crate) fn crypt(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    slot: &mut Option<CipherOp>,
    input: (*mut CK_BYTE, CK_ULONG),
    output: (*mut CK_BYTE, *mut CK_ULONG),
    encrypt: bool,
) -> Result<(), Error> {
    drive(slot, |op| {
        if op.multi_part {
            return Err(Error::OperationActive);
        }
        let data = ffi::input(input.0, input.1)?;
        let mut out = OutBuf::new(output.0, output.1)?;
        op.run(lib, session, data, &mut out, encrypt)
    })
}

/// C_EncryptUpdate / C_DecryptUpdate for an active AES operation.
pub(crate) fn crypt_update(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    slot: &mut Option<CipherOp>,
    part: (*mut CK_BYTE, CK_ULONG),
    output: (*mut CK_BYTE, *mut CK_ULONG),
    encrypt: bool,
) -> Result<(), Error> {
    drive(slot, |op| {
        let part = ffi::input(part.0, part.1)?;
        let mut out = OutBuf::new(output.0, output.1)?;
        op.update(lib, session, part, &mut out, encrypt)
    })
}

/// C_EncryptFinal / C_DecryptFinal for an active AES operation.
pub(crate) fn crypt_final(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    slot: &mut Option<CipherOp>,
    output: (*mut CK_BYTE, *mut CK_ULONG),
    encrypt: bool,
) -> Result<(), Error> {
    drive(slot, |op| {
        let mut out = OutBuf::new(output.0, output.1)?;
        op.finish(lib, session, &mut out, encrypt)
    })
}

/// C_SignInit / C_VerifyInit with a MAC mechanism (no parameter).
pub(crate) fn mac_init(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    raw: &RawMechanism,
    key: CK_OBJECT_HANDLE,
    sign: bool,
) -> Result<(), Error> {
    let mac_len = mac_len(raw.ty).ok_or(Error::MechanismInvalid(raw.ty))?;
    raw.no_parameter()?;
    lib.sessions.with(session, |s| {
        let usage = if sign {
            ensure_idle(&s.sign)?;
            ensure_idle(&s.secret.sign)?;
            CKA_SIGN
        } else {
            ensure_idle(&s.verify)?;
            ensure_idle(&s.secret.verify)?;
            CKA_VERIFY
        };
        check_key(lib, session, s.slot, key, usage, raw.ty)?;
        let op = Some(MacOp {
            key,
            mechanism: raw.ty,
            mac_len,
            data: Zeroizing::new(Vec::new()),
            multi_part: false,
        });
        if sign {
            s.secret.sign = op;
        } else {
            s.secret.verify = op;
        }
        Ok(())
    })?
}

impl MacOp {
    fn add(&mut self, part: &[u8]) -> Result<(), Error> {
        let len = self.data.len() + part.len();
        if len > MAX_SYMMETRIC_INPUT {
            return Err(Error::DataLenRange { len });
        }
        self.data.extend_from_slice(part);
        self.multi_part = true;
        Ok(())
    }

    fn sign(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        out: &mut OutBuf<u8>,
    ) -> Result<Step, Error> {
        if out.prepare(self.mac_len)? == Fill::LengthOnly {
            return Ok(Step::Continue);
        }
        if data.len() > MAX_SYMMETRIC_INPUT {
            return Err(Error::DataLenRange { len: data.len() });
        }
        let request = RequestBody::MacSign {
            session,
            key: self.key,
            mechanism: self.mechanism,
            input: data.to_vec(),
        };
        match lib.daemon.call(request)? {
            ReplyBody::Bytes(mac) => {
                out.put(&mac)?;
                Ok(Step::Finished)
            }
            _ => Err(Error::Transport),
        }
    }

    fn verify(
        &self,
        lib: &Library,
        session: CK_SESSION_HANDLE,
        data: &[u8],
        mac: &[u8],
    ) -> Result<Step, Error> {
        if mac.len() != self.mac_len {
            return Err(Error::SignatureLenRange {
                len: mac.len(),
                expected: self.mac_len,
            });
        }
        if data.len() > MAX_SYMMETRIC_INPUT {
            return Err(Error::DataLenRange { len: data.len() });
        }
        let request = RequestBody::MacVerify {
            session,
            key: self.key,
            mechanism: self.mechanism,
            input: data.to_vec(),
            mac: mac.to_vec(),
        };
        match lib.daemon.call(request)? {
            ReplyBody::Done => Ok(Step::Finished),
            _ => Err(Error::Transport),
        }
    }
}

/// C_Sign (single part, `data` Some) or C_SignFinal (`data` None).
pub(crate) fn mac_sign(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    s: &mut Session,
    data: Option<(*mut CK_BYTE, CK_ULONG)>,
    output: (*mut CK_BYTE, *mut CK_ULONG),
) -> Result<(), Error> {
    drive(&mut s.secret.sign, |op| {
        let mut out = OutBuf::new(output.0, output.1)?;
        match data {
            Some(_) if op.multi_part => Err(Error::OperationActive),
            Some((ptr, len)) => op.sign(lib, session, ffi::input(ptr, len)?, &mut out),
            None => op.sign(lib, session, &op.data, &mut out),
        }
    })
}

/// C_Verify (single part, `data` Some) or C_VerifyFinal (`data` None).
pub(crate) fn mac_verify(
    lib: &Library,
    session: CK_SESSION_HANDLE,
    s: &mut Session,
    data: Option<(*mut CK_BYTE, CK_ULONG)>,
    mac: (*mut CK_BYTE, CK_ULONG),
) -> Result<(), Error> {
    drive(&mut s.secret.verify, |op| {
        let mac = ffi::input(mac.0, mac.1)?;
        match data {
            Some(_) if op.multi_part => Err(Error::OperationActive),
            Some((ptr, len)) => op.verify(lib, session, ffi::input(ptr, len)?, mac),
            None => op.verify(lib, session, &op.data, mac),
        }
    })
}

/// C_SignUpdate / C_VerifyUpdate for an active MAC operation in `slot`.
pub(crate) fn mac_update(
    slot: &mut Option<MacOp>,
    part: (*mut CK_BYTE, CK_ULONG),
) -> Result<(), Error> {
    drive(slot, |op| {
        op.add(ffi::input(part.0, part.1)?)?;
        Ok(Step::Continue)
    })
}

/// C_GenerateKey: the card makes an AES or generic secret key.
pub(crate) extern "C" fn fn_c_generate_key(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let raw = ffi::mechanism(mechanism)?;
        if !matches!(raw.ty, CKM_AES_KEY_GEN | CKM_GENERIC_SECRET_KEY_GEN) {
            return Err(Error::MechanismInvalid(raw.ty));
        }
        raw.no_parameter()?;
        if key.is_null() {
            return Err(Error::ArgumentsBad);
        }
        let template = template_to_wire(&Template::new(template, count)?.entries()?)?;
        let request = RequestBody::GenerateKey {
            session,
            mechanism: raw.ty,
            template,
        };
        match lib.daemon.call(request)? {
            ReplyBody::Object(handle) => write_out(key, handle),
            _ => Err(Error::Transport),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(params: CipherParams) -> CipherOp {
        CipherOp::new(1, CKM_AES_GCM, params)
    }

    #[test]
    fn updates_send_whole_blocks_and_hold_back_the_padding_block() {
        let cbc = op(CipherParams::AesCbcPad { iv: vec![0; 16] });
        assert_eq!(cbc.sendable(15, true), 0);
        assert_eq!(cbc.sendable(33, true), 32);
        assert_eq!(cbc.sendable(32, false), 16);
        assert_eq!(cbc.sendable(16, false), 0);
        assert_eq!(cbc.sendable(40, false), 32);
        let ctr = op(CipherParams::AesCtr {
            counter: vec![0; 16],
            counter_bits: 128,
        });
        assert_eq!(ctr.sendable(47, false), 32);
        let gcm = op(CipherParams::AesGcm {
            iv: vec![0; 12],
            aad: vec![],
            tag_bits: 128,
        });
        assert_eq!(gcm.sendable(100, true), 0);
    }

    #[test]
    fn ctr_counters_advance_in_their_low_bits_only() {
        let mut counter = vec![0xaa; 16];
        counter[15] = 0xfe;
        // 8 counter bits at 0xfe: one more block fits, two do not.
        let next = advance_counter(&counter, 8, 1).unwrap();
        assert_eq!(next[15], 0xff);
        assert_eq!(next[..15], counter[..15]);
        assert_eq!(advance_counter(&counter, 8, 2), None);
        // With 9 bits the carry goes into the next byte's low bit.
        let next = advance_counter(&counter, 9, 2).unwrap();
        assert_eq!((next[14], next[15]), (0xab, 0x00));
        assert_eq!(advance_counter(&[0xff; 16], 128, 1), None);
        assert_eq!(advance_counter(&[0; 16], 128, 3).unwrap()[15], 3);
    }

    #[test]
    fn output_lengths_answer_length_queries() {
        let gcm = op(CipherParams::AesGcm {
            iv: vec![0; 12],
            aad: vec![],
            tag_bits: 128,
        });
        assert_eq!(gcm.output_len(5, true), Ok(21));
        assert_eq!(gcm.output_len(21, false), Ok(5));
        assert!(gcm.output_len(15, false).is_err());
        let cbc = op(CipherParams::AesCbcPad { iv: vec![0; 16] });
        assert_eq!(cbc.output_len(16, true), Ok(32));
        assert_eq!(cbc.output_len(15, true), Ok(16));
        assert_eq!(cbc.output_len(32, false), Ok(32));
        assert_eq!(
            cbc.output_len(33, false),
            Err(Error::EncryptedDataLenRange {
                len: 33,
                expected: 48
            })
        );
        let ctr = op(CipherParams::AesCtr {
            counter: vec![0; 16],
            counter_bits: 128,
        });
        assert_eq!(ctr.output_len(7, false), Ok(7));
    }

    #[test]
    fn cipher_parameters_are_checked() {
        let mut iv = [0u8; 12];
        let mut p = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: std::ptr::null_mut(),
            ulAADLen: 0,
            ulTagBits: 128,
        };
        let raw = |p: &CK_GCM_PARAMS| {
            RawMechanism::from_parts(
                CKM_AES_GCM,
                (p as *const CK_GCM_PARAMS).cast(),
                size_of::<CK_GCM_PARAMS>(),
            )
        };
        assert!(cipher_params(&raw(&p)).is_ok());
        p.ulTagBits = 96;
        assert_eq!(
            cipher_params(&raw(&p)),
            Err(Error::MechanismParamInvalid(CKM_AES_GCM))
        );
        p.ulTagBits = 128;
        p.ulIvLen = 8;
        assert_eq!(
            cipher_params(&raw(&p)),
            Err(Error::MechanismParamInvalid(CKM_AES_GCM))
        );
        let short_iv = [0u8; 8];
        let cbc = RawMechanism::from_parts(CKM_AES_CBC_PAD, short_iv.as_ptr().cast(), 8);
        assert_eq!(
            cipher_params(&cbc),
            Err(Error::MechanismParamInvalid(CKM_AES_CBC_PAD))
        );
        let ctr = CK_AES_CTR_PARAMS {
            ulCounterBits: 0,
            cb: [0; 16],
        };
        let ctr = RawMechanism::from_parts(
            CKM_AES_CTR,
            (&ctr as *const CK_AES_CTR_PARAMS).cast(),
            size_of::<CK_AES_CTR_PARAMS>(),
        );
        assert_eq!(
            cipher_params(&ctr),
            Err(Error::MechanismParamInvalid(CKM_AES_CTR))
        );
        assert_eq!(mac_len(CKM_SHA384_HMAC), Some(48));
        assert_eq!(mac_len(CKM_SHA_1_HMAC), None);
    }
}
