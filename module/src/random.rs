//! Random numbers (PKCS#11 3.0 §5.15): C_GenerateRandom from the card's
//! DRBG; C_SeedRandom is refused because the card takes no external seed.

use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody, MAX_DATA};

use crate::entry::with_library;
use crate::error::Error;
use crate::ffi;
use crate::session::done;

pub(crate) extern "C" fn fn_c_generate_random(
    session: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        let out = ffi::output(out, len)?;
        // Large requests are split so that no reply exceeds the frame limit.
        for chunk in out.chunks_mut(MAX_DATA) {
            let len = chunk.len() as u32;
            match lib
                .daemon
                .call(RequestBody::GenerateRandom { session, len })?
            {
                ReplyBody::Bytes(b) if b.len() == chunk.len() => chunk.copy_from_slice(&b),
                _ => return Err(Error::Transport),
            }
        }
        Ok(())
    })
}

/// Checks the session with the daemon (so a closed or foreign session is
/// reported as such), then refuses: the DRBG is seeded on the card only.
pub(crate) extern "C" fn fn_c_seed_random(
    session: CK_SESSION_HANDLE,
    seed: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    with_library(|lib| {
        lib.sessions.check(session)?;
        ffi::input(seed, len)?;
        done(lib, RequestBody::CheckSession { session })?;
        Err(Error::RandomSeedNotSupported)
    })
}
