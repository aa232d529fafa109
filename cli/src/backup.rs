//! `backup export --out FILE` and `backup import FILE`: every token object
//! of a token in one file that only cards of the same cloning domain can
//! restore, and that none can restore once a byte of it changed.
//!
//! Both need the user PIN: the keys are the user's, and the SO alone must
//! not be able to carry them to a card whose user PIN the SO sets. The file
//! is written by this process, but its keys are wrapped and its tag made by
//! the card (see `mesign_proto::backup`).

use std::path::Path;

use cryptoki_sys::*;
use mesign_proto::backup::BackupFile;
use mesign_proto::{ReplyBody, RequestBody};
use serde_json::json;

use crate::args::{hex, Args};
use crate::client::Connection;
use crate::domain::{domain_of, write_new};
use crate::error::CliError;
use crate::pin::{self, PinKind};

/// `backup export --out FILE`.
pub fn export(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let out = Path::new(args.required("out")?);
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let user_pin = pin::read_pin(args, PinKind::User, "PIN: ", false)?;
    let mut session = conn.open_session(slot)?;
    session.login(CKU_USER, &user_pin)?;
    let handle = session.handle();
    let reply = session
        .conn()
        .call(RequestBody::BackupExport { session: handle });
    let file = match reply.map_err(explain)? {
        ReplyBody::Bytes(file) => file,
        _ => return Err(CliError::UnexpectedReply),
    };
    let (_, body) = BackupFile::parse(&file).ok_or(CliError::UnexpectedReply)?;
    write_new(out, &file)?;
    let keys = body.objects.iter().filter(|o| o.key.is_some()).count();
    let domain = hex(&body.domain_id);
    if args.json() {
        println!(
            "{}",
            json!({"out": out.display().to_string(), "domain": domain, "objects": body.objects.len(), "keys": keys})
        );
    } else {
        println!(
            "{} objects ({keys} keys wrapped under domain {domain}) written to {}",
            body.objects.len(),
            out.display()
        );
        println!("labels, ids, certificates and public keys in it are readable by anyone; keep it like any inventory");
    }
    Ok(())
}

/// `backup import FILE`.
pub fn import(args: &Args) -> Result<(), CliError> {
    let path = Path::new(args.single_positional("the backup file")?);
    let file = std::fs::read(path).map_err(|e| CliError::File(path.into(), e))?;
    let (_, body) = BackupFile::parse(&file).ok_or_else(|| {
        CliError::malformed(
            path.display().to_string(),
            "not a MeSign backup file (or damaged beyond reading)",
        )
    })?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let theirs = hex(&body.domain_id);
    match domain_of(&mut conn, slot)? {
        None => {
            return Err(CliError::Rejected(format!(
                "the card in slot {slot} is in no cloning domain; the backup belongs to domain {theirs}: join it first (`mesign-hsm domain join`)"
            )))
        }
        Some(ours) if ours != theirs => {
            return Err(CliError::Rejected(format!(
                "the backup belongs to cloning domain {theirs}, the card in slot {slot} to domain {ours}: it cannot read it; nothing imported"
            )))
        }
        Some(_) => {}
    }
    let user_pin = pin::read_pin(args, PinKind::User, "PIN: ", false)?;
    let mut session = conn.open_session(slot)?;
    session.login(CKU_USER, &user_pin)?;
    let handle = session.handle();
    let reply = session.conn().call(RequestBody::BackupImport {
        session: handle,
        file,
    });
    let (restored, skipped) = match reply.map_err(explain)? {
        ReplyBody::BackupImported { restored, skipped } => (restored, skipped),
        _ => return Err(CliError::UnexpectedReply),
    };
    let skipped: Vec<_> = skipped
        .iter()
        .map(|s| {
            json!({
                "class": class_name(s.class),
                "id": hex(&s.id),
                "label": String::from_utf8_lossy(&s.label),
            })
        })
        .collect();
    if args.json() {
        println!(
            "{}",
            json!({"restored": restored, "skipped": skipped, "source_serial": body.source_serial})
        );
    } else {
        println!(
            "{restored} objects restored from the backup of card {} ({} objects)",
            body.source_serial,
            body.objects.len()
        );
        for s in &skipped {
            println!(
                "skipped (exists already): {} id {} label \"{}\"",
                s["class"].as_str().unwrap_or_default(),
                s["id"].as_str().unwrap_or_default(),
                s["label"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn class_name(class: u64) -> String {
    match class as CK_OBJECT_CLASS {
        CKO_PRIVATE_KEY => "private-key".into(),
        CKO_PUBLIC_KEY => "public-key".into(),
        CKO_SECRET_KEY => "secret-key".into(),
        CKO_CERTIFICATE => "certificate".into(),
        CKO_DATA => "data".into(),
        other => format!("class-0x{other:x}"),
    }
}

/// The daemon's codes for backup commands, in words.
fn explain(e: CliError) -> CliError {
    let why = match e {
        CliError::Refused(rv) => match rv as CK_RV {
            CKR_SIGNATURE_INVALID => {
                "the backup file does not verify: it was modified, or made in another cloning domain; nothing imported"
            }
            CKR_KEY_NEEDED => {
                "the card is in no cloning domain: run `mesign-hsm domain create` or `domain join` first"
            }
            CKR_DATA_INVALID => "the backup file is malformed; nothing imported",
            CKR_DATA_LEN_RANGE => {
                "the token holds more than one backup file can carry (1 MiB)"
            }
            _ => return e,
        },
        _ => return e,
    };
    let CliError::Refused(rv) = e else {
        unreachable!("only refusals are explained")
    };
    CliError::Rejected(format!("{why} (CK_RV 0x{rv:x})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_codes_are_explained() {
        let e = explain(CliError::Refused(CKR_SIGNATURE_INVALID)).to_string();
        assert!(e.contains("modified") && e.contains("0x"), "{e}");
        let e = explain(CliError::Refused(CKR_KEY_NEEDED)).to_string();
        assert!(e.contains("domain join"), "{e}");
        assert!(matches!(
            explain(CliError::Refused(CKR_PIN_INCORRECT)),
            CliError::Refused(_)
        ));
        assert_eq!(class_name(CKO_CERTIFICATE), "certificate");
    }
}
