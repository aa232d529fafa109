//! PIN policy on a token of its own: length bounds from the token info, the
//! failure counter's flags on the way to a lock, the SO unlocking the user
//! PIN with C_InitPIN, the same lock for the SO PIN, and a counter that a
//! restart does not reset. Token info flags and the serial number are
//! checked on the way.

use cryptoki::error::RvError;
use cryptoki::session::UserType;
use cryptoki::slot::TokenInfo;
use softhsm_tests::target::pin;
use softhsm_tests::{conformance, expect_rv, Divergence, Target, SO_PIN, USER_PIN};

conformance!(blank => pin_policy_lockout_and_token_flags);

/// The daemon's default `max_pin_attempts`.
const MAX_ATTEMPTS: usize = 10;

fn info(t: &Target) -> TokenInfo {
    t.pkcs11().get_token_info(t.slot()).expect("C_GetTokenInfo")
}

fn user_flags(i: &TokenInfo) -> (bool, bool, bool) {
    (
        i.user_pin_count_low(),
        i.user_pin_final_try(),
        i.user_pin_locked(),
    )
}

fn so_flags(i: &TokenInfo) -> (bool, bool, bool) {
    (
        i.so_pin_count_low(),
        i.so_pin_final_try(),
        i.so_pin_locked(),
    )
}

fn pin_policy_lockout_and_token_flags(t: &Target) {
    t.init_token("pins");
    t.init_user_pin();
    let first = info(t);
    assert!(first.token_initialized() && first.user_pin_initialized());
    assert!(first.login_required(), "CKF_LOGIN_REQUIRED");
    assert!(first.rng(), "CKF_RNG");
    assert!(
        !first.protected_authentication_path(),
        "no PIN pad: CKF_PROTECTED_AUTHENTICATION_PATH must be clear"
    );
    assert!(!first.serial_number().is_empty(), "a serial number");
    assert!(first.model().len() <= 16 && !first.model().is_empty());
    let (min, max) = (first.min_pin_length(), first.max_pin_length());
    assert!(1 <= min && min <= max, "PIN bounds {min}..={max}");

    // Length bounds apply when a PIN is set.
    let s = t.session();
    s.login(UserType::So, Some(&pin(SO_PIN)))
        .expect("SO C_Login");
    expect_rv(s.init_pin(&pin(&"1".repeat(min - 1))), RvError::PinLenRange);
    expect_rv(s.init_pin(&pin(&"1".repeat(max + 1))), RvError::PinLenRange);
    s.logout().expect("SO C_Logout");

    // Wrong user PINs: COUNT_LOW, then FINAL_TRY, then LOCKED.
    for attempt in 1..=MAX_ATTEMPTS {
        expect_rv(
            s.login(UserType::User, Some(&pin("000000"))),
            RvError::PinIncorrect,
        );
        let flags = user_flags(&info(t));
        if t.diverges(Divergence::SoftHsmNeverLocksPins) {
            assert_eq!(flags, (true, false, false), "attempt {attempt}");
            continue;
        }
        let want = match attempt {
            n if n == MAX_ATTEMPTS => (false, false, true),
            n if n == MAX_ATTEMPTS - 1 => (true, true, false),
            _ => (true, false, false),
        };
        assert_eq!(
            flags, want,
            "(COUNT_LOW, FINAL_TRY, LOCKED) after {attempt} wrong PINs"
        );
    }
    let locked = !t.diverges(Divergence::SoftHsmNeverLocksPins);
    if locked {
        expect_rv(
            s.login(UserType::User, Some(&pin(USER_PIN))),
            RvError::PinLocked,
        );
    }

    // A restart keeps the counter.
    drop(s);
    let serial = first.serial_number().to_owned();
    t.restart();
    let restarted = info(t);
    assert_eq!(
        restarted.serial_number(),
        serial,
        "serial stable across restarts"
    );
    assert_eq!(
        user_flags(&restarted),
        if locked {
            (false, false, true)
        } else {
            (true, false, false)
        },
        "the user PIN's counter after a restart"
    );

    // The SO unlocks the user PIN by setting a new one.
    let s = t.session();
    s.login(UserType::So, Some(&pin(SO_PIN)))
        .expect("SO C_Login");
    s.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
    s.logout().expect("SO C_Logout");
    assert_eq!(user_flags(&info(t)), (false, false, false));
    s.login(UserType::User, Some(&pin(USER_PIN)))
        .expect("user C_Login after the SO reset the PIN");
    s.logout().expect("C_Logout");

    // Wrong SO PINs lock the SO PIN the same way.
    for attempt in 1..=MAX_ATTEMPTS {
        expect_rv(
            s.login(UserType::So, Some(&pin("87654321"))),
            RvError::PinIncorrect,
        );
        let flags = so_flags(&info(t));
        if t.diverges(Divergence::SoftHsmNeverLocksPins) {
            assert_eq!(flags, (true, false, false), "SO attempt {attempt}");
            continue;
        }
        let want = match attempt {
            n if n == MAX_ATTEMPTS => (false, false, true),
            n if n == MAX_ATTEMPTS - 1 => (true, true, false),
            _ => (true, false, false),
        };
        assert_eq!(flags, want, "SO flags after {attempt} wrong PINs");
    }
    if locked {
        expect_rv(
            s.login(UserType::So, Some(&pin(SO_PIN))),
            RvError::PinLocked,
        );
        drop(s);
        expect_rv(
            t.pkcs11().init_token(t.slot(), &pin(SO_PIN), "pins"),
            RvError::PinLocked,
        );
        // The user PIN is independent of the SO PIN's lock.
        let s = t.session();
        s.login(UserType::User, Some(&pin(USER_PIN)))
            .expect("user C_Login with the SO PIN locked");
        s.logout().expect("C_Logout");
    }
}
