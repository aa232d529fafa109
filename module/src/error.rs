//! The module's one error type and its exhaustive mapping to `CK_RV`.
//!
//! Variants carry the data that explains them (the handle, the needed
//! length, the daemon's return value) so tests and future tracing can say
//! more than a bare code; [`Error::rv`] is the only place codes are chosen.

use cryptoki_sys::*;

/// Why a PKCS#11 call did not return `CKR_OK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A call other than C_Initialize before C_Initialize (or after a fork).
    NotInitialized,
    /// C_Initialize twice.
    AlreadyInitialized,
    /// A NULL or inconsistent pointer/length argument.
    ArgumentsBad,
    /// The application offered mutex callbacks but forbade OS locking.
    CantLock,
    /// The daemon refused the request with this `CK_RV`; passed on unchanged.
    Daemon(CK_RV),
    /// The daemon's socket cannot be reached at all.
    DaemonUnreachable,
    /// A connection failed mid-call or the daemon sent an unexpected answer.
    Transport,
    /// The output buffer holds fewer than `needed` elements.
    BufferTooSmall { needed: usize },
    /// This application opened no session with this handle.
    SessionHandleInvalid(CK_SESSION_HANDLE),
    /// No slot with this id.
    SlotIdInvalid(CK_SLOT_ID),
    /// The key handle names no object the session may use.
    KeyHandleInvalid(CK_OBJECT_HANDLE),
    /// The key's class or type does not fit the mechanism.
    KeyTypeInconsistent,
    /// The key's usage attributes forbid the operation.
    KeyFunctionNotPermitted,
    /// The mechanism is unknown, unsupported here, or not allowed for the key.
    MechanismInvalid(CK_MECHANISM_TYPE),
    /// The mechanism's parameter is missing, malformed or of the wrong size.
    MechanismParamInvalid(CK_MECHANISM_TYPE),
    /// An operation of the same kind is already active in the session.
    OperationActive,
    /// No operation of this kind is active in the session.
    OperationNotInitialized,
    /// The input length does not fit the mechanism.
    DataLenRange { len: usize },
    /// The input has the right length but a form the module cannot use.
    DataInvalid,
    /// A ciphertext that is not exactly one block for the key.
    EncryptedDataLenRange { len: usize, expected: usize },
    /// The signature does not verify.
    SignatureInvalid,
    /// The signature has the wrong length for the key.
    SignatureLenRange { len: usize, expected: usize },
    /// A template value has the wrong size or form for its attribute type.
    AttributeValueInvalid(CK_ATTRIBUTE_TYPE),
    /// C_GetAttributeValue: at least one attribute is sensitive.
    AttributeSensitive(CK_ATTRIBUTE_TYPE),
    /// C_GetAttributeValue: at least one attribute type is invalid.
    AttributeTypeInvalid(CK_ATTRIBUTE_TYPE),
    /// A CKA_ALWAYS_AUTHENTICATE key is used without C_Login
    /// (CKU_CONTEXT_SPECIFIC) since the operation began.
    ContextLoginRequired,
    /// A deliberately unsupported function (see [`crate::unsupported`]).
    FunctionNotSupported,
    /// C_GetFunctionStatus / C_CancelFunction.
    FunctionNotParallel,
    /// C_SeedRandom: the card's DRBG takes no external seed.
    RandomSeedNotSupported,
    /// C_WaitForSlotEvent with CKF_DONT_BLOCK.
    NoEvent,
    /// A panic was caught at the C boundary.
    Panicked,
    /// The daemon list or TLS files in the configuration cannot be used
    /// (C_Initialize).
    BadConfig,
}

impl Error {
    /// The return value the application sees.
    pub fn rv(self) -> CK_RV {
        match self {
            Error::NotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::AlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::ArgumentsBad => CKR_ARGUMENTS_BAD,
            Error::CantLock => CKR_CANT_LOCK,
            Error::Daemon(rv) => rv,
            Error::DaemonUnreachable => CKR_DEVICE_REMOVED,
            Error::Transport => CKR_DEVICE_ERROR,
            Error::BufferTooSmall { .. } => CKR_BUFFER_TOO_SMALL,
            Error::SessionHandleInvalid(_) => CKR_SESSION_HANDLE_INVALID,
            Error::SlotIdInvalid(_) => CKR_SLOT_ID_INVALID,
            Error::KeyHandleInvalid(_) => CKR_KEY_HANDLE_INVALID,
            Error::KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT,
            Error::KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
            Error::MechanismInvalid(_) => CKR_MECHANISM_INVALID,
            Error::MechanismParamInvalid(_) => CKR_MECHANISM_PARAM_INVALID,
            Error::OperationActive => CKR_OPERATION_ACTIVE,
            Error::OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED,
            Error::DataLenRange { .. } => CKR_DATA_LEN_RANGE,
            Error::DataInvalid => CKR_DATA_INVALID,
            Error::EncryptedDataLenRange { .. } => CKR_ENCRYPTED_DATA_LEN_RANGE,
            Error::SignatureInvalid => CKR_SIGNATURE_INVALID,
            Error::SignatureLenRange { .. } => CKR_SIGNATURE_LEN_RANGE,
            Error::AttributeValueInvalid(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            Error::AttributeSensitive(_) => CKR_ATTRIBUTE_SENSITIVE,
            Error::AttributeTypeInvalid(_) => CKR_ATTRIBUTE_TYPE_INVALID,
            Error::ContextLoginRequired => CKR_USER_NOT_LOGGED_IN,
            Error::FunctionNotSupported => CKR_FUNCTION_NOT_SUPPORTED,
            Error::FunctionNotParallel => CKR_FUNCTION_NOT_PARALLEL,
            Error::RandomSeedNotSupported => CKR_RANDOM_SEED_NOT_SUPPORTED,
            Error::NoEvent => CKR_NO_EVENT,
            Error::Panicked => CKR_GENERAL_ERROR,
            Error::BadConfig => CKR_GENERAL_ERROR,
        }
    }
}

/// Maps a call's result to the value returned to C.
pub fn rv(result: Result<(), Error>) -> CK_RV {
    match result {
        Ok(()) => CKR_OK,
        Err(e) => e.rv(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_codes_pass_through_unchanged() {
        assert_eq!(Error::Daemon(CKR_PIN_INCORRECT).rv(), CKR_PIN_INCORRECT);
        assert_eq!(rv(Ok(())), CKR_OK);
        assert_eq!(rv(Err(Error::DaemonUnreachable)), CKR_DEVICE_REMOVED);
        assert_eq!(
            rv(Err(Error::BufferTooSmall { needed: 3 })),
            CKR_BUFFER_TOO_SMALL
        );
    }
}
