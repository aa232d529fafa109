//! The daemon's one error type and its exhaustive mapping to `CK_RV`.
//!
//! Every failure a request can meet is a variant here; the reply carries
//! [`HsmError::rv`]. Variants carry the offending handle, attribute type or
//! length so that logs say what went wrong without string formatting at the
//! point of failure.

use cryptoki_sys::*;
use pci_driver_shim::command::CardFault;

use crate::card::CardFailure;
use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug)]
pub enum HsmError {
    SlotIdInvalid(u64),
    SessionHandleInvalid(u64),
    ObjectHandleInvalid(u64),
    KeyHandleInvalid(u64),
    /// C_OpenSession without CKF_SERIAL_SESSION.
    SessionParallelNotSupported,
    /// C_InitToken while sessions are open on the slot.
    SessionExists,
    /// A write to a token object from a read-only session.
    SessionReadOnly,
    /// SO login while the application has read-only sessions.
    SessionReadOnlyExists,
    /// A read-only session while the application is logged in as SO.
    SessionReadWriteSoExists,
    /// The token in this slot is not initialized.
    TokenNotRecognized(u64),
    UserAlreadyLoggedIn,
    UserAnotherAlreadyLoggedIn,
    UserNotLoggedIn,
    UserPinNotInitialized,
    UserTypeInvalid(u64),
    PinIncorrect,
    PinLocked,
    /// The PIN's length in bytes lies outside the configured bounds.
    PinLenRange(usize),
    AttributeTypeInvalid(u64),
    AttributeValueInvalid(u64),
    AttributeReadOnly(u64),
    /// The template lacks this attribute.
    TemplateIncomplete(u64),
    /// The template contradicts itself or the operation at this attribute.
    TemplateInconsistent(u64),
    /// CKA_MODIFIABLE, CKA_DESTROYABLE or CKA_COPYABLE forbid the action.
    ActionProhibited(u64),
    KeySizeRange(u64),
    CurveNotSupported,
    KeyTypeInconsistent,
    KeyFunctionNotPermitted,
    MechanismInvalid(u64),
    MechanismParamInvalid,
    DataInvalid,
    DataLenRange(usize),
    /// A ciphertext of this length is not one block for the key.
    EncryptedDataLenRange(usize),
    /// A ciphertext that does not decrypt (OAEP decoding failed).
    EncryptedDataInvalid,
    /// A MAC did not verify.
    SignatureInvalid,
    /// A MAC of the wrong length was offered for verification.
    SignatureLenRange(usize),
    /// The request contradicts itself (e.g. a sign scheme that does not fit
    /// the mechanism): a module bug rather than an application error.
    ArgumentsBad,
    /// CKU_CONTEXT_SPECIFIC login without an operation that needs it.
    OperationNotInitialized,
    /// The request frame's protocol version is not ours.
    ProtocolVersion(u16),
    /// A request other than Hello arrived first, or Hello arrived twice.
    ProtocolOrder,
    Card(CardFailure),
    Store(StoreError),
    /// The audit log could not be opened or read.
    Audit(crate::audit::AuditError),
    /// A request handler panicked; the connection's reply says so and the
    /// daemon goes on.
    Internal,
    /// C_WrapKey's wrapping key handle names no visible key.
    WrappingKeyHandleInvalid(u64),
    /// The wrapping key cannot serve the mechanism (wrong class or type).
    WrappingKeyTypeInconsistent,
    /// The wrapping key's length cannot wrap (AES-192: aws-lc-rs wraps
    /// with AES-128 and AES-256 only).
    WrappingKeySizeRange,
    /// C_UnwrapKey's unwrapping key handle names no visible key.
    UnwrappingKeyHandleInvalid(u64),
    /// The unwrapping key cannot serve the mechanism.
    UnwrappingKeyTypeInconsistent,
    /// The unwrapping key's length cannot unwrap (AES-192).
    UnwrappingKeySizeRange,
    /// CKA_EXTRACTABLE is false on the key to be wrapped.
    KeyUnextractable,
    /// The key cannot be wrapped this way: CKA_WRAP_WITH_TRUSTED without a
    /// trusted wrapping key, outside the wrapping key's CKA_WRAP_TEMPLATE,
    /// or a kind of key the mechanism does not wrap.
    KeyNotWrappable,
    /// The wrapped bytes do not unwrap (integrity check or decoding), or
    /// do not hold a key of the template's type.
    WrappedKeyInvalid,
    /// The wrapped bytes have a length the mechanism never produces.
    WrappedKeyLenRange(usize),
    /// In replication mode "both", this many peers did not acknowledge a
    /// change; the change was not made.
    PeersUnavailable(usize),
    /// A replication request on a connection that is not a box of the
    /// domain (the Unix socket, or a signing server's certificate).
    NotAPeer,
}

impl HsmError {
    /// The PKCS#11 return value the client receives.
    pub fn rv(&self) -> u64 {
        match self {
            HsmError::SlotIdInvalid(_) => CKR_SLOT_ID_INVALID,
            HsmError::SessionHandleInvalid(_) => CKR_SESSION_HANDLE_INVALID,
            HsmError::ObjectHandleInvalid(_) => CKR_OBJECT_HANDLE_INVALID,
            HsmError::KeyHandleInvalid(_) => CKR_KEY_HANDLE_INVALID,
            HsmError::SessionParallelNotSupported => CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            HsmError::SessionExists => CKR_SESSION_EXISTS,
            HsmError::SessionReadOnly => CKR_SESSION_READ_ONLY,
            HsmError::SessionReadOnlyExists => CKR_SESSION_READ_ONLY_EXISTS,
            HsmError::SessionReadWriteSoExists => CKR_SESSION_READ_WRITE_SO_EXISTS,
            HsmError::TokenNotRecognized(_) => CKR_TOKEN_NOT_RECOGNIZED,
            HsmError::UserAlreadyLoggedIn => CKR_USER_ALREADY_LOGGED_IN,
            HsmError::UserAnotherAlreadyLoggedIn => CKR_USER_ANOTHER_ALREADY_LOGGED_IN,
            HsmError::UserNotLoggedIn => CKR_USER_NOT_LOGGED_IN,
            HsmError::UserPinNotInitialized => CKR_USER_PIN_NOT_INITIALIZED,
            HsmError::UserTypeInvalid(_) => CKR_USER_TYPE_INVALID,
            HsmError::PinIncorrect => CKR_PIN_INCORRECT,
            HsmError::PinLocked => CKR_PIN_LOCKED,
            HsmError::PinLenRange(_) => CKR_PIN_LEN_RANGE,
            HsmError::AttributeTypeInvalid(_) => CKR_ATTRIBUTE_TYPE_INVALID,
            HsmError::AttributeValueInvalid(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            HsmError::AttributeReadOnly(_) => CKR_ATTRIBUTE_READ_ONLY,
            HsmError::TemplateIncomplete(_) => CKR_TEMPLATE_INCOMPLETE,
            HsmError::TemplateInconsistent(_) => CKR_TEMPLATE_INCONSISTENT,
            HsmError::ActionProhibited(_) => CKR_ACTION_PROHIBITED,
            HsmError::KeySizeRange(_) => CKR_KEY_SIZE_RANGE,
            HsmError::CurveNotSupported => CKR_CURVE_NOT_SUPPORTED,
            HsmError::KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT,
            HsmError::KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
            HsmError::MechanismInvalid(_) => CKR_MECHANISM_INVALID,
            HsmError::MechanismParamInvalid => CKR_MECHANISM_PARAM_INVALID,
            HsmError::DataInvalid => CKR_DATA_INVALID,
            HsmError::DataLenRange(_) => CKR_DATA_LEN_RANGE,
            HsmError::EncryptedDataLenRange(_) => CKR_ENCRYPTED_DATA_LEN_RANGE,
            HsmError::EncryptedDataInvalid => CKR_ENCRYPTED_DATA_INVALID,
            HsmError::SignatureInvalid => CKR_SIGNATURE_INVALID,
            HsmError::SignatureLenRange(_) => CKR_SIGNATURE_LEN_RANGE,
            HsmError::ArgumentsBad => CKR_ARGUMENTS_BAD,
            HsmError::OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED,
            HsmError::ProtocolVersion(_) => CKR_DEVICE_ERROR,
            HsmError::ProtocolOrder => CKR_DEVICE_ERROR,
            HsmError::Card(failure) => card_rv(*failure),
            HsmError::Store(_) => CKR_DEVICE_ERROR,
            HsmError::Audit(_) => CKR_DEVICE_ERROR,
            HsmError::Internal => CKR_GENERAL_ERROR,
            HsmError::WrappingKeyHandleInvalid(_) => CKR_WRAPPING_KEY_HANDLE_INVALID,
            HsmError::WrappingKeyTypeInconsistent => CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
            HsmError::WrappingKeySizeRange => CKR_WRAPPING_KEY_SIZE_RANGE,
            HsmError::UnwrappingKeyHandleInvalid(_) => CKR_UNWRAPPING_KEY_HANDLE_INVALID,
            HsmError::UnwrappingKeyTypeInconsistent => CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
            HsmError::UnwrappingKeySizeRange => CKR_UNWRAPPING_KEY_SIZE_RANGE,
            HsmError::KeyUnextractable => CKR_KEY_UNEXTRACTABLE,
            HsmError::KeyNotWrappable => CKR_KEY_NOT_WRAPPABLE,
            HsmError::WrappedKeyInvalid => CKR_WRAPPED_KEY_INVALID,
            HsmError::WrappedKeyLenRange(_) => CKR_WRAPPED_KEY_LEN_RANGE,
            HsmError::PeersUnavailable(_) => CKR_DEVICE_ERROR,
            HsmError::NotAPeer => CKR_FUNCTION_REJECTED,
        }
    }
}

/// What a card failure means to the application.
fn card_rv(failure: CardFailure) -> u64 {
    match failure {
        CardFailure::Fault(fault) => match fault {
            CardFault::BadInput => CKR_DATA_INVALID,
            CardFault::BadParameters => CKR_MECHANISM_PARAM_INVALID,
            CardFault::NotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
            CardFault::KeyTypeMismatch => CKR_KEY_TYPE_INCONSISTENT,
            CardFault::Malformed => CKR_DEVICE_ERROR,
            CardFault::BadBlob => CKR_DEVICE_ERROR,
            CardFault::SelfTestFailed => CKR_DEVICE_ERROR,
            CardFault::Internal => CKR_DEVICE_ERROR,
            // Domain commands (see the CLI's `domain` and `backup`).
            CardFault::ShareRefused => CKR_ENCRYPTED_DATA_INVALID,
            CardFault::NoDomain => CKR_KEY_NEEDED,
            CardFault::DomainExists => CKR_ACTION_PROHIBITED,
        },
        CardFailure::Timeout => CKR_DEVICE_ERROR,
        CardFailure::Gone => CKR_DEVICE_REMOVED,
        CardFailure::Transport => CKR_DEVICE_ERROR,
        CardFailure::UnexpectedResponse => CKR_DEVICE_ERROR,
        CardFailure::Recovering => CKR_DEVICE_ERROR,
    }
}

impl From<StoreError> for HsmError {
    fn from(e: StoreError) -> Self {
        HsmError::Store(e)
    }
}

impl From<CardFailure> for HsmError {
    fn from(e: CardFailure) -> Self {
        HsmError::Card(e)
    }
}

impl std::fmt::Display for HsmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The Debug form names the variant and its data, which is what an
        // operator reading the log needs; the CK_RV is appended for grepping.
        write!(f, "{self:?} (CK_RV {:#x})", self.rv())
    }
}

impl std::error::Error for HsmError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_faults_map_to_distinct_application_codes() {
        assert_eq!(
            HsmError::Card(CardFailure::Fault(CardFault::BadInput)).rv(),
            CKR_DATA_INVALID
        );
        assert_eq!(HsmError::Card(CardFailure::Gone).rv(), CKR_DEVICE_REMOVED);
        assert_eq!(
            HsmError::Card(CardFailure::Fault(CardFault::NotPermitted)).rv(),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        assert_eq!(HsmError::PinLenRange(2).rv(), CKR_PIN_LEN_RANGE);
    }
}
