//! The benchmark's one error type: everything that stops a measurement.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::options::UsageError;
use crate::source::Source;
use crate::workload::Op;

/// Why a benchmark step failed.
#[derive(Debug)]
pub enum BenchError {
    /// The command line could not be understood.
    Usage(UsageError),
    /// One of our artefacts is not in the chosen profile directory.
    MissingArtefact {
        /// The file that should exist.
        path: PathBuf,
        /// The cargo command that builds it.
        fix: &'static str,
    },
    /// A file-system or process step failed.
    Io {
        /// What the benchmark was doing.
        step: &'static str,
        /// The file or program involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `mesign-hsmd` exited before it accepted a connection.
    DaemonExited {
        /// Its exit status.
        status: ExitStatus,
        /// Where its output went.
        log: PathBuf,
    },
    /// `mesign-hsmd` did not accept a connection in time.
    DaemonNotReady {
        /// The socket that was polled.
        socket: PathBuf,
        /// How long the benchmark waited.
        waited: Duration,
        /// Where its output went.
        log: PathBuf,
    },
    /// A PKCS#11 call failed.
    Pkcs11 {
        /// The module that returned the error.
        source_kind: Source,
        /// What the benchmark was doing.
        step: &'static str,
        /// The error, carrying the CK_RV.
        error: cryptoki::error::Error,
    },
    /// The module offers no slot with an uninitialized token to set up.
    NoFreeSlot {
        /// The module.
        source_kind: Source,
    },
    /// A public key read back from a module could not be used.
    BadPublicKey {
        /// The module.
        source_kind: Source,
        /// The operation whose key it is.
        op: Op,
    },
    /// aws-lc-rs refused to generate a key or sign.
    InProcess {
        /// The operation.
        op: Op,
    },
    /// A signature had the wrong length.
    SignatureLength {
        /// Who produced it.
        source_kind: Source,
        /// The operation.
        op: Op,
        /// Its length.
        actual: usize,
    },
    /// An independent verifier rejected a counted signature.
    BadSignature {
        /// Who produced it.
        source_kind: Source,
        /// The operation.
        op: Op,
        /// The client thread that received it.
        thread: usize,
        /// The operation number within that thread.
        counter: u64,
    },
    /// The `openssl` command line could not verify an RSA sample.
    OpenSsl {
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: Vec<u8>,
    },
    /// The soak scenario's admin load saw something wrong.
    Soak(&'static str),
    /// `--one-core`: the process could not be pinned to a core.
    Pin(String),
    /// A found-object count was not the one object created with that label or id.
    FindMismatch {
        /// The module.
        source_kind: Source,
        /// The object number searched for.
        index: usize,
        /// How many handles came back.
        found: usize,
    },
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Usage(e) => write!(f, "{e}"),
            BenchError::MissingArtefact { path, fix } => {
                write!(f, "{} is missing: run `{fix}` first", path.display())
            }
            BenchError::Io { step, path, source } => {
                write!(f, "{step} ({}): {source}", path.display())
            }
            BenchError::DaemonExited { status, log } => write!(
                f,
                "mesign-hsmd exited with {status} before accepting connections; see {}",
                log.display()
            ),
            BenchError::DaemonNotReady {
                socket,
                waited,
                log,
            } => write!(
                f,
                "mesign-hsmd did not accept on {} within {waited:?}; see {}",
                socket.display(),
                log.display()
            ),
            BenchError::Pkcs11 {
                source_kind,
                step,
                error,
            } => write!(f, "{}: {step}: {}", source_kind.name(), ck_rv_text(error)),
            BenchError::NoFreeSlot { source_kind } => write!(
                f,
                "{}: no slot with an uninitialized token",
                source_kind.name()
            ),
            BenchError::BadPublicKey { source_kind, op } => write!(
                f,
                "{}: unusable public key for {}",
                source_kind.name(),
                op.name()
            ),
            BenchError::InProcess { op } => write!(f, "aws-lc-rs failed for {}", op.name()),
            BenchError::SignatureLength {
                source_kind,
                op,
                actual,
            } => write!(
                f,
                "{}: {} signature of {actual} bytes, expected {}",
                source_kind.name(),
                op.name(),
                op.signature_len()
            ),
            BenchError::BadSignature {
                source_kind,
                op,
                thread,
                counter,
            } => write!(
                f,
                "{}: {} signature #{counter} of thread {thread} does not verify",
                source_kind.name(),
                op.name()
            ),
            BenchError::OpenSsl { status, stderr } => write!(
                f,
                "openssl pkeyutl -verify exited with {status}: {}",
                String::from_utf8_lossy(stderr).trim()
            ),
            BenchError::Soak(what) => write!(f, "soak: {what}"),
            BenchError::Pin(why) => write!(f, "--one-core: {why}"),
            BenchError::FindMismatch {
                source_kind,
                index,
                found,
            } => write!(
                f,
                "{}: searching for object {index} found {found} objects, expected 1",
                source_kind.name()
            ),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<UsageError> for BenchError {
    fn from(e: UsageError) -> Self {
        BenchError::Usage(e)
    }
}

/// `C_Sign → CKR_DEVICE_ERROR` rather than cryptoki's paragraph of prose, so
/// that a failure under load names the exact return value.
pub fn ck_rv_text(error: &cryptoki::error::Error) -> String {
    match error {
        cryptoki::error::Error::Pkcs11(rv, function) => {
            format!("{function} → {}", ckr_name(&format!("{rv:?}")))
        }
        other => other.to_string(),
    }
}

/// Turns cryptoki's `RvError` variant name (`DeviceError`) into the
/// specification's constant (`CKR_DEVICE_ERROR`).
fn ckr_name(variant: &str) -> String {
    let mut name = String::from("CKR");
    for c in variant.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;
    use cryptoki::error::{Error, RvError};

    #[test]
    fn variant_names_become_ckr_constants() {
        assert_eq!(ckr_name("DeviceError"), "CKR_DEVICE_ERROR");
        assert_eq!(
            ckr_name("MechanismParamInvalid"),
            "CKR_MECHANISM_PARAM_INVALID"
        );
    }

    #[test]
    fn pkcs11_errors_name_function_and_return_value() {
        let text = ck_rv_text(&Error::Pkcs11(
            RvError::SessionHandleInvalid,
            Function::Sign,
        ));
        assert!(text.ends_with("CKR_SESSION_HANDLE_INVALID"), "{text}");
        assert!(text.contains("Sign"), "{text}");
    }
}
