//! `domain create`, `domain join`, `domain show`: the cloning domain whose
//! key lets cards of several boxes read each other's backups.
//!
//! The SO runs create and join. The domain key never reaches this process:
//! the card returns it as shares sealed under the custodians' passphrases,
//! which this module writes to share files and reads back for a join.
//! Passphrases come from `--passphrase-file` (one file per custodian, in
//! share order) or from a prompt, never from the command line.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use cryptoki_sys::*;
use mesign_proto::{DomainShare, DomainShareInput, ReplyBody, RequestBody};
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::{hex, Args};
use crate::client::Connection;
use crate::error::CliError;
use crate::pin::{self, PinKind};
use crate::public_key::pem_block;

/// The PEM label of a share file's body.
const SHARE_LABEL: &str = "MESIGN DOMAIN SHARE";
/// The share file format: the CBOR of `(SHARE_FORMAT, DomainShare)`.
const SHARE_FORMAT: u8 = 1;
/// The card's limit (`MAX_DOMAIN_SHARES`) and passphrase floor, checked
/// here too for a clear message before the SO PIN is asked for.
const MAX_SHARES: u8 = 16;
const MIN_PASSPHRASE_LEN: usize = 8;

/// `domain create --shares N --threshold K [--out-dir DIR] [--replace]`.
pub fn create(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let count = number(args, "shares")?;
    let threshold = number(args, "threshold")?;
    if threshold < 2 || count < threshold || count > MAX_SHARES {
        return Err(CliError::Usage(format!(
            "need 2 <= --threshold <= --shares <= {MAX_SHARES} (a threshold of 1 would make every share the whole key)"
        )));
    }
    let out_dir = PathBuf::from(args.value("out-dir")?.unwrap_or("."));
    output_dir(&out_dir)?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let so_pin = pin::read_pin(args, PinKind::So, "SO PIN: ", false)?;
    let passphrases = passphrases(args, usize::from(count), true)?;
    let mut session = conn.open_session(slot)?;
    session.login(CKU_SO, &so_pin)?;
    let handle = session.handle();
    let reply = session.conn().call(RequestBody::DomainCreate {
        session: handle,
        threshold,
        passphrases: passphrases.iter().map(|p| p.to_vec()).collect(),
        replace: args.flag("replace"),
    });
    let shares = match reply.map_err(explain)? {
        ReplyBody::DomainShares(shares) if shares.len() == usize::from(count) => shares,
        _ => return Err(CliError::UnexpectedReply),
    };
    let id = hex(&shares[0].domain_id);
    let mut written = Vec::new();
    for share in &shares {
        let name = format!(
            "domain-{}-share-{}-of-{}.txt",
            &id[..8],
            share.index,
            share.shares
        );
        let path = out_dir.join(name);
        write_new(&path, share_file(share).as_bytes())?;
        written.push(path);
    }
    if args.json() {
        let files: Vec<_> = written.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{}",
            json!({"domain": id, "threshold": threshold, "shares": files})
        );
    } else {
        println!("cloning domain {id} created on the card in slot {slot}");
        println!("any {threshold} of these {count} shares rebuild it on another card; give one to each custodian:");
        for path in &written {
            println!("  {}", path.display());
        }
    }
    Ok(())
}

/// `domain join SHAREFILE... [--replace]`.
pub fn join(args: &Args) -> Result<(), CliError> {
    if args.positional.is_empty() {
        return Err(CliError::Usage(
            "`domain join` needs the share files".into(),
        ));
    }
    let shares = args
        .positional
        .iter()
        .map(|p| read_share(Path::new(p)))
        .collect::<Result<Vec<_>, _>>()?;
    check_share_set(&shares)?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let so_pin = pin::read_pin(args, PinKind::So, "SO PIN: ", false)?;
    let files = args.values("passphrase-file");
    let mut inputs = Vec::with_capacity(shares.len());
    for (i, share) in shares.iter().enumerate() {
        let passphrase = match files.get(i) {
            Some(file) => passphrase_from_file(Path::new(file))?,
            None if !files.is_empty() => {
                return Err(CliError::Usage(
                    "give one --passphrase-file per share file, in the same order".into(),
                ))
            }
            None => prompt(&format!(
                "Passphrase for share {} of {}: ",
                share.index, share.shares
            ))?,
        };
        inputs.push(DomainShareInput {
            share: share.clone(),
            passphrase: passphrase.to_vec(),
        });
    }
    let mut session = conn.open_session(slot)?;
    session.login(CKU_SO, &so_pin)?;
    let handle = session.handle();
    let reply = session.conn().call(RequestBody::DomainJoin {
        session: handle,
        shares: inputs,
        replace: args.flag("replace"),
    });
    let id = match reply.map_err(explain)? {
        ReplyBody::Domain { id: Some(id) } => hex(&id),
        _ => return Err(CliError::UnexpectedReply),
    };
    if args.json() {
        println!("{}", json!({"slot": slot, "domain": id}));
    } else {
        println!("the card in slot {slot} joined cloning domain {id}");
    }
    Ok(())
}

/// `domain show`: the domain id, or "none".
pub fn show(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let id = domain_of(&mut conn, slot)?;
    if args.json() {
        println!("{}", json!({"slot": slot, "domain": id}));
    } else {
        println!("{}", id.as_deref().unwrap_or("none"));
    }
    Ok(())
}

/// The hex domain id of the card in `slot`, if it is in a domain.
pub fn domain_of(conn: &mut Connection, slot: u64) -> Result<Option<String>, CliError> {
    match conn.call(RequestBody::DomainShow { slot })? {
        ReplyBody::Domain { id } => Ok(id.as_deref().map(hex)),
        _ => Err(CliError::UnexpectedReply),
    }
}

/// The daemon's codes for domain commands, in words.
fn explain(e: CliError) -> CliError {
    let why = match e {
        CliError::Refused(rv) => match rv as CK_RV {
            CKR_ENCRYPTED_DATA_INVALID => {
                "a share did not open: a passphrase is wrong, or a share file was modified"
            }
            CKR_ACTION_PROHIBITED => {
                "the card is in a cloning domain already (see `mesign-hsm domain show`); --replace leaves it, and it can then no longer read that domain's backups"
            }
            CKR_DATA_INVALID => {
                "the card refused the shares: too few, or they do not rebuild the domain key they name"
            }
            _ => return e,
        },
        _ => return e,
    };
    CliError::Rejected(format!("{why} ({})", e_code(&e)))
}

fn e_code(e: &CliError) -> String {
    match e {
        CliError::Refused(rv) => format!("CK_RV 0x{rv:x}"),
        _ => String::new(),
    }
}

/// Refuses, before anything is sent, a set of shares the card would refuse:
/// shares of different domains, the same share twice, fewer than the
/// threshold.
fn check_share_set(shares: &[DomainShare]) -> Result<(), CliError> {
    let first = &shares[0];
    if let Some(other) = shares.iter().find(|s| s.domain_id != first.domain_id) {
        return Err(CliError::Rejected(format!(
            "the shares belong to different domains ({} and {})",
            hex(&first.domain_id),
            hex(&other.domain_id)
        )));
    }
    let mut indices: Vec<u8> = shares.iter().map(|s| s.index).collect();
    indices.sort_unstable();
    indices.dedup();
    if indices.len() != shares.len() {
        return Err(CliError::Rejected("the same share was given twice".into()));
    }
    if shares.len() < usize::from(first.threshold) {
        return Err(CliError::Rejected(format!(
            "domain {} needs {} of its {} shares; {} given",
            hex(&first.domain_id),
            first.threshold,
            first.shares,
            shares.len()
        )));
    }
    Ok(())
}

/// A share file: two lines saying what it is, then the PEM block.
fn share_file(share: &DomainShare) -> String {
    let body = minicbor::to_vec((SHARE_FORMAT, share)).expect("encoding into a Vec");
    format!(
        "MeSign HSM cloning-domain share {} of {} (any {} rebuild the domain key)\nDomain: {}\n{}",
        share.index,
        share.shares,
        share.threshold,
        hex(&share.domain_id),
        pem_block(SHARE_LABEL, &body)
    )
}

fn parse_share(text: &str) -> Option<DomainShare> {
    let start = text.find("-----BEGIN ")?;
    let (label, body) = x509_cert::der::pem::decode_vec(&text.as_bytes()[start..]).ok()?;
    if label != SHARE_LABEL {
        return None;
    }
    let (format, share): (u8, DomainShare) = minicbor::decode(&body).ok()?;
    (format == SHARE_FORMAT).then_some(share)
}

fn read_share(path: &Path) -> Result<DomainShare, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::File(path.into(), e))?;
    parse_share(&text).ok_or_else(|| {
        CliError::malformed(
            path.display().to_string(),
            "not a MeSign domain share file (or damaged beyond reading)",
        )
    })
}

/// Writes a new file readable by its owner only; never overwrites.
/// Creates `dir` (mode 0700 for what it creates) before anything is asked
/// of the card, so that files the card's answer must go to have a place:
/// a domain whose share files cannot be written is a domain lost.
pub fn output_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::File(dir.into(), e))
}

pub fn write_new(path: &Path, contents: &[u8]) -> Result<(), CliError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::File(path.into(), e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::File(path.into(), e))
}

fn number(args: &Args, name: &str) -> Result<u8, CliError> {
    let value = args.required(name)?;
    value
        .parse()
        .map_err(|_| CliError::Usage(format!("--{name} {value}: not a number from 0 to 255")))
}

type Passphrase = Zeroizing<Vec<u8>>;

/// `count` passphrases: from the `--passphrase-file`s, else prompted (twice
/// each when `confirm`).
fn passphrases(args: &Args, count: usize, confirm: bool) -> Result<Vec<Passphrase>, CliError> {
    let files = args.values("passphrase-file");
    if !files.is_empty() && files.len() != count {
        return Err(CliError::Usage(format!(
            "give {count} --passphrase-file options, one per custodian, or none to be asked"
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let passphrase = match files.get(i) {
            Some(file) => passphrase_from_file(Path::new(file))?,
            None => {
                let first = prompt(&format!("Passphrase of custodian {}: ", i + 1))?;
                if confirm && *prompt("Repeat it: ")? != *first {
                    return Err(CliError::Rejected("the two passphrases differ".into()));
                }
                first
            }
        };
        if passphrase.len() < MIN_PASSPHRASE_LEN {
            return Err(CliError::Rejected(format!(
                "passphrase {} is shorter than {MIN_PASSPHRASE_LEN} characters",
                i + 1
            )));
        }
        out.push(passphrase);
    }
    Ok(out)
}

fn passphrase_from_file(path: &Path) -> Result<Passphrase, CliError> {
    pin::secret_from_file(path)
}

fn prompt(text: &str) -> Result<Passphrase, CliError> {
    pin::prompt_secret(text).map_err(|_| CliError::NoPin("passphrase"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(index: u8) -> DomainShare {
        DomainShare {
            domain_id: vec![0xab; 16],
            index,
            threshold: 2,
            shares: 3,
            iterations: 600_000,
            salt: vec![1; 16],
            nonce: vec![2; 12],
            sealed: vec![3; 49],
        }
    }

    #[test]
    fn share_files_round_trip_and_say_what_they_are() {
        let text = share_file(&share(2));
        assert!(text.starts_with("MeSign HSM cloning-domain share 2 of 3 (any 2"));
        assert!(text.contains(&format!("Domain: {}", "ab".repeat(16))));
        assert_eq!(parse_share(&text), Some(share(2)));
        assert_eq!(parse_share("garbage"), None);
        let other_label = text.replace(SHARE_LABEL, "CERTIFICATE");
        assert_eq!(parse_share(&other_label), None);
    }

    #[test]
    fn share_sets_are_checked_before_the_card_sees_them() {
        assert!(check_share_set(&[share(1), share(3)]).is_ok());
        let one = check_share_set(&[share(1)]).unwrap_err().to_string();
        assert!(one.contains("needs 2 of its 3 shares; 1 given"), "{one}");
        let twice = check_share_set(&[share(1), share(1)])
            .unwrap_err()
            .to_string();
        assert!(twice.contains("twice"), "{twice}");
        let mut foreign = share(2);
        foreign.domain_id = vec![0xcd; 16];
        let mixed = check_share_set(&[share(1), foreign])
            .unwrap_err()
            .to_string();
        assert!(mixed.contains("different domains"), "{mixed}");
    }

    #[test]
    fn domain_codes_are_explained() {
        let e = explain(CliError::Refused(CKR_ENCRYPTED_DATA_INVALID)).to_string();
        assert!(e.contains("passphrase is wrong") && e.contains("0x"), "{e}");
        let e = explain(CliError::Refused(CKR_ACTION_PROHIBITED)).to_string();
        assert!(e.contains("--replace"), "{e}");
        assert!(matches!(
            explain(CliError::Refused(CKR_PIN_INCORRECT)),
            CliError::Refused(_)
        ));
    }
}
