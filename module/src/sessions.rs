//! The sessions this application opened and the operations the module
//! holds for each: find, sign, verify and digest.
//!
//! Keeping the handle set locally lets calls on foreign or stale handles
//! fail with `CKR_SESSION_HANDLE_INVALID` without a round trip, and lets
//! digesting and verifying run without the daemon at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cryptoki_sys::{CK_SESSION_HANDLE, CK_SLOT_ID};

use crate::decrypt::DecryptOp;
use crate::digest::DigestOp;
use crate::encrypt::EncryptOp;
use crate::error::Error;
use crate::objects::FindOp;
use crate::sign::SignOp;
use crate::symmetric::SecretOps;
use crate::verify::VerifyOp;
use crate::wrap::PendingWrap;

/// One open session as the module sees it.
pub(crate) struct Session {
    pub slot: CK_SLOT_ID,
    pub find: Option<FindOp>,
    pub sign: Option<SignOp>,
    pub verify: Option<VerifyOp>,
    pub digest: Option<DigestOp>,
    pub encrypt: Option<EncryptOp>,
    pub decrypt: Option<DecryptOp>,
    /// Operations with secret keys (AES, HMAC, CMAC).
    pub secret: SecretOps,
    /// A C_WrapKey result whose length was asked for.
    pub pending_wrap: Option<PendingWrap>,
}

/// The application's open sessions.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<CK_SESSION_HANDLE, Arc<Mutex<Session>>>>,
}

impl Sessions {
    fn map(&self) -> MutexGuard<'_, HashMap<CK_SESSION_HANDLE, Arc<Mutex<Session>>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, handle: CK_SESSION_HANDLE, slot: CK_SLOT_ID) {
        let s = Session {
            slot,
            find: None,
            sign: None,
            verify: None,
            digest: None,
            encrypt: None,
            decrypt: None,
            secret: SecretOps::default(),
            pending_wrap: None,
        };
        self.map().insert(handle, Arc::new(Mutex::new(s)));
    }

    pub(crate) fn remove(&self, handle: CK_SESSION_HANDLE) {
        self.map().remove(&handle);
    }

    pub(crate) fn remove_slot(&self, slot: CK_SLOT_ID) {
        self.map().retain(|_, s| lock(s).slot != slot);
    }

    /// The slot of an open session.
    pub(crate) fn slot(&self, handle: CK_SESSION_HANDLE) -> Result<CK_SLOT_ID, Error> {
        let s = self.get(handle)?;
        let slot = lock(&s).slot;
        Ok(slot)
    }

    /// Whether this application has a session open on `slot`.
    pub(crate) fn any_on(&self, slot: CK_SLOT_ID) -> bool {
        self.map().values().any(|s| lock(s).slot == slot)
    }

    /// Fails with `CKR_SESSION_HANDLE_INVALID` for handles we did not open.
    pub(crate) fn check(&self, handle: CK_SESSION_HANDLE) -> Result<(), Error> {
        self.get(handle).map(|_| ())
    }

    /// Runs `f` on the session; calls on one session are serialised, calls
    /// on different sessions run in parallel.
    pub(crate) fn with<R>(
        &self,
        handle: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session) -> R,
    ) -> Result<R, Error> {
        let s = self.get(handle)?;
        let mut guard = lock(&s);
        Ok(f(&mut guard))
    }

    /// Ends every signing operation and drops wrapped keys not yet
    /// fetched: after C_Logout the private keys they hold are no longer
    /// usable.
    pub(crate) fn end_sign_operations(&self) {
        let all: Vec<_> = self.map().values().cloned().collect();
        for s in all {
            let mut s = lock(&s);
            s.sign = None;
            s.decrypt = None;
            s.secret = SecretOps::default();
            s.pending_wrap = None;
        }
    }

    fn get(&self, handle: CK_SESSION_HANDLE) -> Result<Arc<Mutex<Session>>, Error> {
        self.map()
            .get(&handle)
            .cloned()
            .ok_or(Error::SessionHandleInvalid(handle))
    }
}

fn lock(s: &Mutex<Session>) -> MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a step of an operation leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The operation stays active (an update, or a length query).
    Continue,
    /// The operation completed.
    Finished,
}

/// Refuses to start an operation where one of the same kind is active.
pub(crate) fn ensure_idle<T>(slot: &Option<T>) -> Result<(), Error> {
    match slot {
        Some(_) => Err(Error::OperationActive),
        None => Ok(()),
    }
}

/// Runs one step of the active operation in `slot`. The operation ends when
/// the step finishes it or fails with anything but `CKR_BUFFER_TOO_SMALL`.
pub(crate) fn drive<T>(
    slot: &mut Option<T>,
    step: impl FnOnce(&mut T) -> Result<Step, Error>,
) -> Result<(), Error> {
    let op = slot.as_mut().ok_or(Error::OperationNotInitialized)?;
    match step(op) {
        Ok(Step::Continue) => Ok(()),
        Ok(Step::Finished) => {
            *slot = None;
            Ok(())
        }
        Err(e @ Error::BufferTooSmall { .. }) => Err(e),
        Err(e) => {
            *slot = None;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_end_on_errors_but_not_on_short_buffers() {
        let mut slot = Some(1u8);
        assert_eq!(ensure_idle(&slot), Err(Error::OperationActive));
        assert_eq!(
            drive(&mut slot, |_| Err(Error::BufferTooSmall { needed: 4 })),
            Err(Error::BufferTooSmall { needed: 4 })
        );
        assert!(slot.is_some());
        assert_eq!(drive(&mut slot, |_| Ok(Step::Continue)), Ok(()));
        assert!(slot.is_some());
        assert_eq!(
            drive(&mut slot, |_| Err(Error::DataLenRange { len: 1 })),
            Err(Error::DataLenRange { len: 1 })
        );
        assert!(slot.is_none());
        assert_eq!(
            drive(&mut slot, |_| Ok(Step::Finished)),
            Err(Error::OperationNotInitialized)
        );
        let mut slot = Some(2u8);
        assert_eq!(drive(&mut slot, |_| Ok(Step::Finished)), Ok(()));
        assert!(slot.is_none());
    }

    #[test]
    fn unknown_handles_are_refused_locally() {
        let s = Sessions::default();
        s.insert(5, 0);
        s.insert(6, 1);
        assert_eq!(s.check(5), Ok(()));
        assert_eq!(s.check(7), Err(Error::SessionHandleInvalid(7)));
        s.remove_slot(0);
        assert_eq!(s.check(5), Err(Error::SessionHandleInvalid(5)));
        assert_eq!(s.check(6), Ok(()));
        s.remove(6);
        assert!(s.check(6).is_err());
    }
}
