//! One PKCS#11 conformance suite, run against our module and SoftHSMv2.
//!
//! Every case is a plain function taking a [`Target`]; the [`conformance!`]
//! macro turns a list of them into `mesign::<case>` and `softhsm::<case>`
//! tests, so one `cargo test` runs both modules and the test name says which
//! one failed. The harness pieces:
//!
//! - [`target`]: loading each module once per process, tokens, sessions,
//!   restarts; our daemon is started lazily and stopped at process exit.
//! - [`verify`]: independent RustCrypto verification of every signature.
//! - [`divergence`]: the named differences between the two modules.
//! - [`ffi`]: raw calls `cryptoki` cannot express (buffer sizes, padding).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod binaries;
mod cleanup;
pub mod daemon;
pub mod der;
pub mod divergence;
pub mod ffi;
pub mod keys;
pub mod standalone;
pub mod target;
pub mod verify;

pub use divergence::Divergence;
pub use target::{expect_rv, Kind, Target, SO_PIN, USER_PIN};

/// The committed self-signed P-256 test certificate (DER).
pub const TEST_CERTIFICATE: &[u8] = include_bytes!("../testdata/cert-p256.der");

/// Generates `mod mesign` and `mod softhsm`, each with one `#[test]` per case.
///
/// `conformance!(ready => case_a, case_b)` runs `case_a(&Target::ready(kind))`
/// for both kinds; `blank` instead gives an uninitialized token.
#[macro_export]
macro_rules! conformance {
    ($setup:ident => $($case:ident),+ $(,)?) => {
        mod mesign {
            $(
                #[test]
                fn $case() {
                    super::$case(&$crate::Target::$setup($crate::Kind::Mesign));
                }
            )+
        }
        mod softhsm {
            $(
                #[test]
                fn $case() {
                    super::$case(&$crate::Target::$setup($crate::Kind::SoftHsm));
                }
            )+
        }
    };
}
