//! PIN records and lockout counting.
//!
//! PINs are never stored: a record holds a random salt and a
//! PBKDF2-HMAC-SHA512 hash, with the iteration count so that the count can
//! be raised later without invalidating existing records. Verification is
//! constant-time (`aws_lc_rs::pbkdf2::verify`).

use std::num::NonZeroU32;

use aws_lc_rs::{pbkdf2, rand::SecureRandom};
use minicbor::{Decode, Encode};
use zeroize::Zeroizing;

/// Iterations for new records (OWASP's 2023 figure for PBKDF2-HMAC-SHA512).
pub const PIN_ITERATIONS: u32 = 210_000;

const SALT_LEN: usize = 16;
const HASH_LEN: usize = 64;

/// A salted PIN hash as stored in the token record.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct PinRecord {
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub salt: Vec<u8>,
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub hash: Vec<u8>,
    #[n(2)]
    pub iterations: u32,
}

impl PinRecord {
    /// Hashes `pin` under a fresh random salt.
    pub fn new(pin: &[u8]) -> PinRecord {
        PinRecord::with_iterations(pin, PIN_ITERATIONS)
    }

    /// As [`PinRecord::new`] with a chosen count (tests use small counts).
    pub fn with_iterations(pin: &[u8], iterations: u32) -> PinRecord {
        let iterations = NonZeroU32::new(iterations.max(1)).expect("at least one iteration");
        let mut salt = vec![0; SALT_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut salt)
            .expect("the system RNG does not fail on Linux");
        let mut hash = vec![0; HASH_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            iterations,
            &salt,
            pin,
            &mut hash,
        );
        PinRecord {
            salt,
            hash,
            iterations: iterations.get(),
        }
    }

    /// True if `pin` is the PIN this record was made from.
    pub fn verify(&self, pin: &[u8]) -> bool {
        // A record with a zero count is corrupt; refusing is the safe answer.
        let Some(iterations) = NonZeroU32::new(self.iterations) else {
            return false;
        };
        let pin = Zeroizing::new(pin.to_vec());
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA512,
            iterations,
            &self.salt,
            &pin,
            &self.hash,
        )
        .is_ok()
    }
}

/// The state of a PIN's failure counter as the token flags report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinState {
    Fresh,
    /// At least one failure since the last success.
    CountLow,
    /// One more failure locks the PIN.
    FinalTry,
    Locked,
}

/// Classifies a failure count against the configured maximum.
pub fn pin_state(failures: u32, max_attempts: u32) -> PinState {
    if failures >= max_attempts {
        PinState::Locked
    } else if failures + 1 == max_attempts {
        PinState::FinalTry
    } else if failures > 0 {
        PinState::CountLow
    } else {
        PinState::Fresh
    }
}

/// The token flags for a user PIN in `state`.
pub fn user_pin_flags(state: PinState) -> u64 {
    use cryptoki_sys::*;
    match state {
        PinState::Fresh => 0,
        PinState::CountLow => CKF_USER_PIN_COUNT_LOW,
        PinState::FinalTry => CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY,
        PinState::Locked => CKF_USER_PIN_LOCKED,
    }
}

/// The token flags for an SO PIN in `state`.
pub fn so_pin_flags(state: PinState) -> u64 {
    use cryptoki_sys::*;
    match state {
        PinState::Fresh => 0,
        PinState::CountLow => CKF_SO_PIN_COUNT_LOW,
        PinState::FinalTry => CKF_SO_PIN_COUNT_LOW | CKF_SO_PIN_FINAL_TRY,
        PinState::Locked => CKF_SO_PIN_LOCKED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki_sys::*;

    #[test]
    fn record_verifies_only_its_own_pin() {
        let r = PinRecord::with_iterations(b"123456", 1000);
        assert!(r.verify(b"123456"));
        assert!(!r.verify(b"123457"));
        assert!(!r.verify(b""));
        assert_eq!(r.salt.len(), SALT_LEN);
        assert_eq!(r.iterations, 1000);
    }

    #[test]
    fn same_pin_gets_different_salts_and_hashes() {
        let a = PinRecord::with_iterations(b"1234", 10);
        let b = PinRecord::with_iterations(b"1234", 10);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
        assert!(!a.hash.windows(4).any(|w| w == b"1234"));
    }

    #[test]
    fn zero_iteration_record_never_verifies() {
        let mut r = PinRecord::with_iterations(b"1234", 10);
        r.iterations = 0;
        assert!(!r.verify(b"1234"));
    }

    #[test]
    fn default_record_uses_the_strong_count() {
        assert_eq!(PinRecord::new(b"1234").iterations, PIN_ITERATIONS);
    }

    #[test]
    fn lockout_states_follow_the_failure_count() {
        assert_eq!(pin_state(0, 3), PinState::Fresh);
        assert_eq!(pin_state(1, 3), PinState::CountLow);
        assert_eq!(pin_state(2, 3), PinState::FinalTry);
        assert_eq!(pin_state(3, 3), PinState::Locked);
        assert_eq!(pin_state(9, 3), PinState::Locked);
        assert_eq!(
            user_pin_flags(pin_state(2, 3)),
            CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY
        );
        assert_eq!(so_pin_flags(pin_state(3, 3)), CKF_SO_PIN_LOCKED);
        assert_eq!(user_pin_flags(pin_state(0, 3)), 0);
    }
}
