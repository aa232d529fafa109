//! Why a command failed, the message an administrator reads, and the exit
//! code a script tests.
//!
//! Exit codes are part of the interface (they are listed in `--help`):
//! 0 success, 1 refused or failed, 2 usage error, 3 daemon unreachable,
//! 4 no such key or object, 5 authentication failed (wrong or locked PIN).

use std::path::PathBuf;

use cryptoki_sys::*;

/// Exit code: the daemon refused, or a check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the command line was wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the daemon's socket could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the named key or object does not exist.
pub const EXIT_NOT_FOUND: u8 = 4;
/// Exit code: a PIN was wrong, or is locked.
pub const EXIT_AUTH: u8 = 5;

/// Everything that can go wrong in a command.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong; the message says how.
    Usage(String),
    /// `--help` was asked for: not an error, handled by `main`.
    Help,
    /// The daemon's socket did not accept.
    Unreachable(PathBuf, std::io::Error),
    /// The connection broke or carried garbage.
    Protocol(mesign_proto::FrameError),
    /// The daemon answered with a PKCS#11 error code.
    Refused(u64),
    /// The daemon answered with a body that does not fit the request.
    UnexpectedReply,
    /// No object of this kind carries this label (and id).
    NotFound { what: &'static str, label: String },
    /// More than one key carries the label; `--id` must choose.
    Ambiguous { label: String, ids: Vec<String> },
    /// A label, id or certificate is already there; `what` names it.
    Exists { what: &'static str, value: String },
    /// A file could not be read or written.
    File(PathBuf, std::io::Error),
    /// An input file or the daemon's data could not be parsed.
    Malformed { what: String, why: String },
    /// A check refused the operation (mismatching key, bad signature, ...).
    Rejected(String),
    /// No PIN source: not interactive and neither a file nor a variable.
    NoPin(&'static str),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Help | CliError::NoPin(_) => EXIT_USAGE,
            CliError::Unreachable(..) => EXIT_UNREACHABLE,
            CliError::NotFound { .. } => EXIT_NOT_FOUND,
            CliError::Refused(rv) if is_auth_failure(*rv) => EXIT_AUTH,
            CliError::Protocol(_)
            | CliError::Refused(_)
            | CliError::UnexpectedReply
            | CliError::Ambiguous { .. }
            | CliError::Exists { .. }
            | CliError::File(..)
            | CliError::Malformed { .. }
            | CliError::Rejected(_) => EXIT_FAILED,
        }
    }

    /// A `Malformed` error.
    pub fn malformed(what: impl Into<String>, why: impl std::fmt::Display) -> Self {
        CliError::Malformed {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

fn is_auth_failure(rv: u64) -> bool {
    matches!(rv as CK_RV, CKR_PIN_INCORRECT | CKR_PIN_LOCKED)
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(msg) => write!(f, "{msg} (see mesign-hsm --help)"),
            CliError::Help => write!(f, "help requested"),
            CliError::Unreachable(path, e) => write!(
                f,
                "cannot reach mesign-hsmd at {}: {e} (is the daemon running? set --socket or MESIGN_HSM_SOCKET)",
                path.display()
            ),
            CliError::Protocol(e) => write!(f, "talking to mesign-hsmd: {e}"),
            CliError::Refused(rv) => write!(f, "{} (CK_RV 0x{rv:x})", rv_message(*rv)),
            CliError::UnexpectedReply => write!(f, "mesign-hsmd sent an unexpected reply"),
            CliError::NotFound { what, label } => write!(f, "no {what} labelled \"{label}\""),
            CliError::Ambiguous { label, ids } => write!(
                f,
                "several keys are labelled \"{label}\" (ids {}); choose one with --id",
                ids.join(", ")
            ),
            CliError::Exists { what, value } => write!(f, "{what} {value} exists already"),
            CliError::File(path, e) => write!(f, "{}: {e}", path.display()),
            CliError::Malformed { what, why } => write!(f, "{what}: {why}"),
            CliError::Rejected(why) => write!(f, "{why}"),
            CliError::NoPin(what) => write!(f, "no {what} given: {}", pin_sources(what)),
        }
    }
}

fn pin_sources(what: &str) -> &'static str {
    match what {
        "SO PIN" => "use --so-pin-file FILE, MESIGN_HSM_SO_PIN, or run on a terminal",
        "new PIN" => "use --new-pin-file FILE, MESIGN_HSM_NEW_PIN, or run on a terminal",
        "passphrase" => {
            "use --passphrase-file FILE (one per share, in order), or run on a terminal"
        }
        _ => "use --pin-file FILE, MESIGN_HSM_PIN, or run on a terminal",
    }
}

/// What a PKCS#11 return code means for an administrator.
pub fn rv_message(rv: u64) -> &'static str {
    match rv as CK_RV {
        CKR_PIN_INCORRECT => "wrong PIN (each failure counts towards the lockout)",
        CKR_PIN_LOCKED => {
            "the PIN is locked after too many failures; the SO unlocks the user PIN with `mesign-hsm pin unlock`"
        }
        CKR_PIN_LEN_RANGE => "the PIN is too short or too long for this token (see `mesign-hsm token status`)",
        CKR_PIN_INVALID => "the PIN contains characters the token does not accept",
        CKR_USER_NOT_LOGGED_IN => "this needs a login that was not done",
        CKR_USER_PIN_NOT_INITIALIZED => {
            "the token has no user PIN yet; set one with `mesign-hsm pin unlock` (SO)"
        }
        CKR_USER_ALREADY_LOGGED_IN | CKR_USER_ANOTHER_ALREADY_LOGGED_IN => {
            "another login is active for this application"
        }
        CKR_TOKEN_NOT_RECOGNIZED => {
            "the token is not initialised; run `mesign-hsm token init --label LABEL`"
        }
        CKR_SESSION_EXISTS => {
            "sessions are open on this token (signing servers still connected?); stop them first"
        }
        CKR_SLOT_ID_INVALID => "no such slot",
        CKR_DEVICE_ERROR => "the card reported a device error (see `mesign-hsm status`)",
        CKR_DEVICE_MEMORY => "the token is out of memory",
        CKR_DEVICE_REMOVED | CKR_TOKEN_NOT_PRESENT => "the card is not present",
        CKR_KEY_SIZE_RANGE => "the card does not support this key size",
        CKR_CURVE_NOT_SUPPORTED => "the card does not support this curve",
        CKR_MECHANISM_INVALID => "the card or the key does not allow this mechanism",
        CKR_KEY_FUNCTION_NOT_PERMITTED => "the key's usage policy does not allow this operation",
        CKR_TEMPLATE_INCONSISTENT | CKR_TEMPLATE_INCOMPLETE => {
            "the daemon refused the object's attributes"
        }
        CKR_ATTRIBUTE_VALUE_INVALID => "the daemon refused an attribute value",
        CKR_ATTRIBUTE_READ_ONLY => "an attribute may not be set (some need the SO)",
        CKR_ACTION_PROHIBITED => "the object's policy prohibits this",
        CKR_OBJECT_HANDLE_INVALID | CKR_KEY_HANDLE_INVALID => {
            "the object vanished (deleted by someone else?)"
        }
        CKR_SESSION_READ_ONLY => "the session is read-only",
        CKR_DATA_LEN_RANGE => "the data length is out of range",
        CKR_GENERAL_ERROR | CKR_FUNCTION_FAILED => "the daemon failed (see its log)",
        _ => "mesign-hsmd refused the request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_failures_exit_5_and_name_the_fix() {
        let wrong = CliError::Refused(CKR_PIN_INCORRECT);
        assert_eq!(wrong.exit_code(), EXIT_AUTH);
        assert!(wrong.to_string().contains("wrong PIN"), "{wrong}");
        let locked = CliError::Refused(CKR_PIN_LOCKED);
        assert_eq!(locked.exit_code(), EXIT_AUTH);
        assert!(locked.to_string().contains("pin unlock"), "{locked}");
        assert!(locked.to_string().contains("0xa4"), "{locked}");
    }

    #[test]
    fn other_codes_keep_their_number() {
        let e = CliError::Refused(0x8000_1234);
        assert_eq!(e.exit_code(), EXIT_FAILED);
        assert!(e.to_string().contains("0x80001234"));
        assert!(CliError::Refused(CKR_TOKEN_NOT_RECOGNIZED)
            .to_string()
            .contains("token init"));
    }

    #[test]
    fn exit_codes_by_kind() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
        assert_eq!(CliError::NoPin("PIN").exit_code(), EXIT_USAGE);
        let nf = CliError::NotFound {
            what: "key",
            label: "k".into(),
        };
        assert_eq!(nf.exit_code(), EXIT_NOT_FOUND);
        assert_eq!(CliError::Rejected("no".into()).exit_code(), EXIT_FAILED);
    }
}
