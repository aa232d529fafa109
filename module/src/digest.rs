//! C_DigestInit / C_Digest / C_DigestUpdate / C_DigestFinal (PKCS#11 3.0
//! §5.11), computed in the module: no round trip after the local session
//! check. Also the hash helpers used by signing and verifying.

use aws_lc_rs::digest::{self, Context};
use cryptoki_sys::*;
use mesign_proto::HashAlg;

use crate::entry::with_library;
use crate::error::Error;
use crate::ffi::{self, Fill, OutBuf};
use crate::mechanism::digest_mechanism;
use crate::sessions::{drive, ensure_idle, Step};

/// The aws-lc-rs algorithm for a wire hash.
pub(crate) fn algorithm(hash: HashAlg) -> &'static digest::Algorithm {
    match hash {
        HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha224 => &digest::SHA224,
        HashAlg::Sha256 => &digest::SHA256,
        HashAlg::Sha384 => &digest::SHA384,
        HashAlg::Sha512 => &digest::SHA512,
    }
}

/// An active digest operation.
pub(crate) struct DigestOp {
    ctx: Context,
    /// C_DigestUpdate was called, so C_Digest is no longer allowed.
    multi_part: bool,
}

pub(crate) extern "C" fn fn_c_digest_init(
    session: CK_SESSION_HANDLE,
    mechanism: *mut CK_MECHANISM,
) -> CK_RV {
    with_library(|lib| {
        let hash = digest_mechanism(&ffi::mechanism(mechanism)?)?;
        lib.sessions.with(session, |s| {
            ensure_idle(&s.digest)?;
            s.digest = Some(DigestOp {
                ctx: Context::new(algorithm(hash)),
                multi_part: false,
            });
            Ok(())
        })?
    })
}

pub(crate) extern "C" fn fn_c_digest(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            drive(&mut s.digest, |op| {
                if op.multi_part {
                    return Err(Error::OperationActive);
                }
                let mut out = OutBuf::new(digest, digest_len)?;
                if out.prepare(op.ctx.algorithm().output_len())? == Fill::LengthOnly {
                    return Ok(Step::Continue);
                }
                let mut ctx = op.ctx.clone();
                ctx.update(ffi::input(data, data_len)?);
                out.put(ctx.finish().as_ref())?;
                Ok(Step::Finished)
            })
        })?
    })
}

pub(crate) extern "C" fn fn_c_digest_update(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    part_len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            drive(&mut s.digest, |op| {
                op.ctx.update(ffi::input(part, part_len)?);
                op.multi_part = true;
                Ok(Step::Continue)
            })
        })?
    })
}

pub(crate) extern "C" fn fn_c_digest_final(
    session: CK_SESSION_HANDLE,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.with(session, |s| {
            drive(&mut s.digest, |op| {
                let mut out = OutBuf::new(digest, digest_len)?;
                if out.prepare(op.ctx.algorithm().output_len())? == Fill::LengthOnly {
                    return Ok(Step::Continue);
                }
                out.put(op.ctx.clone().finish().as_ref())?;
                Ok(Step::Finished)
            })
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms_match_wire_lengths() {
        for h in [
            HashAlg::Sha1,
            HashAlg::Sha224,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(algorithm(h).output_len(), h.len());
        }
    }
}
