//! The token and its PINs: `status`, `token init`, `token status`,
//! `pin change`, `pin unlock`. PIN rules (lengths, failure counters,
//! lockout) are the daemon's; this module only sequences the requests.

use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody, Status, TokenInfo};
use serde_json::json;

use crate::args::Args;
use crate::client::Connection;
use crate::error::CliError;
use crate::pin::{self, Pin, PinKind};

/// `status`: the daemon and its cards.
pub fn status(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let mut conn = Connection::open(&args.socket()?)?;
    match conn.call(RequestBody::Status)? {
        ReplyBody::Status(status) => print_status(&status, args.json()),
        _ => return Err(CliError::UnexpectedReply),
    }
    Ok(())
}

fn print_status(status: &Status, as_json: bool) {
    if as_json {
        let cards: Vec<_> = status
            .cards
            .iter()
            .map(|c| {
                json!({
                    "slot": c.slot,
                    "backend": c.backend,
                    "serial": c.serial,
                    "firmware_version": format!("{}.{}", c.firmware_version.0, c.firmware_version.1),
                    "operational": c.operational,
                    "token_initialized": c.token_initialized,
                    "objects": c.objects,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"daemon_version": status.daemon_version, "cards": cards})
        );
        return;
    }
    println!("mesign-hsmd {}", status.daemon_version);
    for c in &status.cards {
        println!(
            "slot {}: {} serial {} firmware {}.{} {} token {} objects {}",
            c.slot,
            c.backend,
            c.serial,
            c.firmware_version.0,
            c.firmware_version.1,
            if c.operational {
                "operational"
            } else {
                "IN ERROR STATE"
            },
            if c.token_initialized {
                "initialized"
            } else {
                "not initialized"
            },
            c.objects
        );
    }
}

fn token_info(conn: &mut Connection, slot: u64) -> Result<TokenInfo, CliError> {
    match conn.call(RequestBody::TokenInfo { slot })? {
        ReplyBody::TokenInfo(info) => Ok(info),
        _ => Err(CliError::UnexpectedReply),
    }
}

/// Refuses a PIN the token would refuse, before anything is changed.
fn check_length(info: &TokenInfo, pin: &Pin, what: &str) -> Result<(), CliError> {
    let len = pin.len() as u64;
    if len < info.min_pin_len || len > info.max_pin_len {
        return Err(CliError::Rejected(format!(
            "the {what} must have {} to {} characters",
            info.min_pin_len, info.max_pin_len
        )));
    }
    Ok(())
}

/// `token init --label L [--force]`: sets the label and SO PIN (erasing
/// every object when the token was initialised before, which needs
/// `--force` and the current SO PIN), then the user PIN.
pub fn init(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let label = args.required("label")?;
    if label.is_empty() || label.len() > 32 {
        return Err(CliError::Usage("--label must have 1 to 32 bytes".into()));
    }
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let info = token_info(&mut conn, slot)?;
    let initialized = info.flags & CKF_TOKEN_INITIALIZED != 0;
    if initialized && !args.flag("force") {
        return Err(CliError::Rejected(format!(
            "the token in slot {slot} is initialised already (label \"{}\"); re-initialising erases every key and certificate on it: add --force, with the current SO PIN",
            trimmed_label(&info)
        )));
    }
    let so_prompt = if initialized {
        "Current SO PIN: "
    } else {
        "New SO PIN: "
    };
    let so_pin = pin::read_pin(args, PinKind::So, so_prompt, !initialized)?;
    check_length(&info, &so_pin, "SO PIN")?;
    let user_pin = pin::read_pin(args, PinKind::User, "New user PIN: ", true)?;
    check_length(&info, &user_pin, "user PIN")?;
    let mut padded = label.as_bytes().to_vec();
    padded.resize(32, b' ');
    conn.done(RequestBody::InitToken {
        slot,
        so_pin: so_pin.to_vec(),
        label: padded,
    })?;
    let mut session = conn.open_session(slot)?;
    session.login(CKU_SO, &so_pin)?;
    let handle = session.handle();
    session.conn().done(RequestBody::InitPin {
        session: handle,
        pin: user_pin.to_vec(),
    })?;
    if args.json() {
        println!(
            "{}",
            json!({"slot": slot, "label": label, "initialized": true})
        );
    } else {
        println!(
            "token in slot {slot} initialised with label \"{label}\"; SO PIN and user PIN set"
        );
    }
    Ok(())
}

fn trimmed_label(info: &TokenInfo) -> String {
    String::from_utf8_lossy(&info.label).trim_end().to_string()
}

/// The CKF_* token flags an administrator cares about, by name.
fn flag_names(flags: u64) -> Vec<&'static str> {
    [
        (CKF_TOKEN_INITIALIZED, "token-initialized"),
        (CKF_USER_PIN_INITIALIZED, "user-pin-initialized"),
        (CKF_LOGIN_REQUIRED, "login-required"),
        (CKF_RNG, "rng"),
        (CKF_USER_PIN_COUNT_LOW, "user-pin-count-low"),
        (CKF_USER_PIN_FINAL_TRY, "user-pin-final-try"),
        (CKF_USER_PIN_LOCKED, "user-pin-locked"),
        (CKF_USER_PIN_TO_BE_CHANGED, "user-pin-to-be-changed"),
        (CKF_SO_PIN_COUNT_LOW, "so-pin-count-low"),
        (CKF_SO_PIN_FINAL_TRY, "so-pin-final-try"),
        (CKF_SO_PIN_LOCKED, "so-pin-locked"),
        (CKF_SO_PIN_TO_BE_CHANGED, "so-pin-to-be-changed"),
        (CKF_WRITE_PROTECTED, "write-protected"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & *bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// `token status`: the token's label, serial, PIN state and counters.
pub fn token_status(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let info = token_info(&mut conn, slot)?;
    let flags = flag_names(info.flags);
    if args.json() {
        println!(
            "{}",
            json!({
                "slot": slot,
                "label": trimmed_label(&info),
                "manufacturer": info.manufacturer.trim_end(),
                "model": info.model.trim_end(),
                "serial": info.serial.trim_end(),
                "flags": flags,
                "min_pin_len": info.min_pin_len,
                "max_pin_len": info.max_pin_len,
                "session_count": info.session_count,
                "rw_session_count": info.rw_session_count,
                "firmware_version": format!("{}.{}", info.firmware_version.0, info.firmware_version.1),
            })
        );
        return Ok(());
    }
    println!("slot {slot}: token \"{}\"", trimmed_label(&info));
    println!(
        "  {} {} serial {} firmware {}.{}",
        info.manufacturer.trim_end(),
        info.model.trim_end(),
        info.serial.trim_end(),
        info.firmware_version.0,
        info.firmware_version.1
    );
    println!("  flags: {}", flags.join(" "));
    println!(
        "  PIN length {} to {}; sessions open {} ({} read-write)",
        info.min_pin_len, info.max_pin_len, info.session_count, info.rw_session_count
    );
    Ok(())
}

/// `pin change [--so]`: the current PIN, then the new one.
pub fn change(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let so = args.flag("so");
    let (kind, who) = if so {
        (PinKind::So, "SO PIN")
    } else {
        (PinKind::User, "user PIN")
    };
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let info = token_info(&mut conn, slot)?;
    let old = pin::read_pin(args, kind, &format!("Current {who}: "), false)?;
    let new = pin::read_pin(args, PinKind::New, &format!("New {who}: "), true)?;
    check_length(&info, &new, who)?;
    let mut session = conn.open_session(slot)?;
    // C_SetPIN changes the SO PIN in an SO session and the user PIN
    // otherwise (the daemon checks the old PIN either way).
    if so {
        session.login(CKU_SO, &old)?;
    }
    let handle = session.handle();
    session.conn().done(RequestBody::SetPin {
        session: handle,
        old_pin: old.to_vec(),
        new_pin: new.to_vec(),
    })?;
    println!("{who} changed");
    Ok(())
}

/// `pin unlock`: the SO sets a new user PIN, which also clears the user
/// PIN's failure counter and lock.
pub fn unlock(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let info = token_info(&mut conn, slot)?;
    let so_pin = pin::read_pin(args, PinKind::So, "SO PIN: ", false)?;
    let new = pin::read_pin(args, PinKind::New, "New user PIN: ", true)?;
    check_length(&info, &new, "user PIN")?;
    let mut session = conn.open_session(slot)?;
    session.login(CKU_SO, &so_pin)?;
    let handle = session.handle();
    session.conn().done(RequestBody::InitPin {
        session: handle,
        pin: new.to_vec(),
    })?;
    println!("user PIN set by the SO; the user PIN is unlocked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named() {
        let names = flag_names(CKF_TOKEN_INITIALIZED | CKF_USER_PIN_LOCKED);
        assert_eq!(names, ["token-initialized", "user-pin-locked"]);
        assert!(flag_names(0).is_empty());
    }
}
