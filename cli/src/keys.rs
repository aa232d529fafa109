//! Key pairs on the card: `key generate`, `list`, `delete` and
//! `export-public`, and the lookup of a key by label (and id) that the
//! certificate commands share.
//!
//! A key pair is two objects with the same CKA_LABEL and CKA_ID; its
//! certificate carries the same CKA_ID. Labels are unique among keys: `key
//! generate` refuses a label (or id) already in use, so `--key LABEL` names
//! one key.
//!
//! Without `--id`, a new key's CKA_ID is 8 random bytes from the card's
//! DRBG: known before the key exists, so the pair is created in one
//! request, and unique in practice (it is checked anyway).

use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody};
use serde_json::json;

use crate::args::{hex, Args};
use crate::cert;
use crate::client::{bytes, flag, ulong, Connection, Session};
use crate::error::CliError;
use crate::pin::{self, PinKind};
use crate::public_key::{Curve, PublicKey, ED25519_PARAMS};

/// The key types `key generate --type` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Ec(Curve),
    Rsa(u32),
    Ed25519,
}

impl KeyType {
    /// Parses `ec-p256`, `rsa-3072`, ...
    pub fn parse(s: &str) -> Result<KeyType, CliError> {
        Ok(match s {
            "ec-p256" => KeyType::Ec(Curve::P256),
            "ec-p384" => KeyType::Ec(Curve::P384),
            "ec-p521" => KeyType::Ec(Curve::P521),
            "rsa-2048" => KeyType::Rsa(2048),
            "rsa-3072" => KeyType::Rsa(3072),
            "rsa-4096" => KeyType::Rsa(4096),
            "ed25519" => KeyType::Ed25519,
            other => {
                return Err(CliError::Usage(format!(
                "--type {other}: expected ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072, rsa-4096 or ed25519"
            )))
            }
        })
    }
}

/// What a new private key may be used for (CKA_SIGN, CKA_DECRYPT,
/// CKA_UNWRAP, CKA_DERIVE). The card binds these to the key for life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub sign: bool,
    pub decrypt: bool,
    pub unwrap: bool,
    pub derive: bool,
}

impl Usage {
    /// Parses a comma-separated list of `sign`, `decrypt`, `unwrap`,
    /// `derive`; the default is `sign` alone.
    pub fn parse(s: Option<&str>) -> Result<Usage, CliError> {
        let Some(list) = s else {
            return Ok(Usage {
                sign: true,
                ..Usage::default()
            });
        };
        let mut usage = Usage::default();
        for word in list.split(',') {
            match word.trim() {
                "sign" => usage.sign = true,
                "decrypt" => usage.decrypt = true,
                "unwrap" => usage.unwrap = true,
                "derive" => usage.derive = true,
                other => {
                    return Err(CliError::Usage(format!(
                        "--usage {other}: expected sign, decrypt, unwrap or derive"
                    )))
                }
            }
        }
        if usage == Usage::default() {
            return Err(CliError::Usage("--usage names no usage".into()));
        }
        Ok(usage)
    }

    fn names(self) -> Vec<&'static str> {
        [
            (self.sign, "sign"),
            (self.decrypt, "decrypt"),
            (self.unwrap, "unwrap"),
            (self.derive, "derive"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// One key object (either half of a pair) as the commands see it.
#[derive(Debug, Clone)]
pub struct KeyObject {
    pub handle: u64,
    pub class: CK_OBJECT_CLASS,
    pub label: String,
    pub id: Vec<u8>,
    pub public: PublicKey,
    /// Private keys only.
    pub usage: Option<Usage>,
}

/// The attributes read for every key object, in this order.
const KEY_ATTRIBUTES: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_LABEL,
    CKA_ID,
    CKA_KEY_TYPE,
    CKA_MODULUS,
    CKA_PUBLIC_EXPONENT,
    CKA_EC_PARAMS,
    CKA_EC_POINT,
    CKA_SIGN,
    CKA_DECRYPT,
    CKA_UNWRAP,
    CKA_DERIVE,
];

/// Every visible key object, optionally only those with `label` and `id`.
pub fn key_objects(
    session: &mut Session<'_>,
    label: Option<&str>,
    id: Option<&[u8]>,
) -> Result<Vec<KeyObject>, CliError> {
    let mut found = Vec::new();
    for class in [CKO_PRIVATE_KEY, CKO_PUBLIC_KEY] {
        let mut template = vec![ulong(CKA_CLASS, class)];
        if let Some(label) = label {
            template.push(bytes(CKA_LABEL, label.as_bytes()));
        }
        if let Some(id) = id {
            template.push(bytes(CKA_ID, id));
        }
        for handle in session.find(template)? {
            found.push(read_key(session, handle)?);
        }
    }
    Ok(found)
}

fn read_key(session: &mut Session<'_>, handle: u64) -> Result<KeyObject, CliError> {
    let v = session.attributes(handle, KEY_ATTRIBUTES)?;
    let ulong_at = |i: usize| {
        v[i].as_deref()
            .and_then(mesign_proto::attr::read_ulong)
            .ok_or_else(|| CliError::malformed("a key object", "missing CKA_CLASS or CKA_KEY_TYPE"))
    };
    let flag_at = |i: usize| {
        v[i].as_deref()
            .and_then(mesign_proto::attr::read_bool)
            .unwrap_or(false)
    };
    let class = ulong_at(0)? as CK_OBJECT_CLASS;
    let public = PublicKey::from_attributes(
        ulong_at(3)? as CK_KEY_TYPE,
        v[4].as_deref(),
        v[5].as_deref(),
        v[6].as_deref(),
        v[7].as_deref(),
    )?;
    Ok(KeyObject {
        handle,
        class,
        label: String::from_utf8_lossy(v[1].as_deref().unwrap_or_default()).into_owned(),
        id: v[2].clone().unwrap_or_default(),
        public,
        usage: (class == CKO_PRIVATE_KEY).then(|| Usage {
            sign: flag_at(8),
            decrypt: flag_at(9),
            unwrap: flag_at(10),
            derive: flag_at(11),
        }),
    })
}

/// The objects of the one key pair labelled `label` (and with `id`, if
/// given); `NotFound` or `Ambiguous` otherwise.
pub fn resolve(
    session: &mut Session<'_>,
    label: &str,
    id: Option<&[u8]>,
) -> Result<Vec<KeyObject>, CliError> {
    let objects = key_objects(session, Some(label), id)?;
    let mut ids: Vec<&[u8]> = objects.iter().map(|o| o.id.as_slice()).collect();
    ids.sort();
    ids.dedup();
    match ids.len() {
        0 => Err(CliError::NotFound {
            what: "key",
            label: label.into(),
        }),
        1 => Ok(objects),
        _ => Err(CliError::Ambiguous {
            label: label.into(),
            ids: ids.into_iter().map(hex).collect(),
        }),
    }
}

/// Logs in as the user with the PIN from a file, the environment or the
/// prompt.
pub fn user_login(session: &mut Session<'_>, args: &Args) -> Result<(), CliError> {
    let pin = pin::read_pin(args, PinKind::User, "User PIN: ", false)?;
    session.login(CKU_USER, &pin)
}

/// A user session on the chosen slot.
fn with_user_session<T>(
    args: &Args,
    work: impl FnOnce(&mut Session<'_>) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let mut session = conn.open_session(slot)?;
    user_login(&mut session, args)?;
    work(&mut session)
}

/// `key generate --type T --label L [--id HEX] [--usage sign,...]`.
pub fn generate(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let key_type = KeyType::parse(args.required("type")?)?;
    let label = args.required("label")?.to_string();
    if label.is_empty() {
        return Err(CliError::Usage("--label must not be empty".into()));
    }
    let usage = Usage::parse(args.value("usage")?)?;
    let wanted_id = args.id()?;
    with_user_session(args, |session| {
        if !key_objects(session, Some(&label), None)?.is_empty() {
            return Err(CliError::Exists {
                what: "a key labelled",
                value: format!("\"{label}\""),
            });
        }
        let id = match wanted_id {
            Some(id) => id,
            None => random(session, 8)?,
        };
        if !key_objects(session, None, Some(&id))?.is_empty() {
            return Err(CliError::Exists {
                what: "a key with id",
                value: hex(&id),
            });
        }
        let (mechanism, mut public) = match key_type {
            KeyType::Ec(curve) => (
                CKM_EC_KEY_PAIR_GEN,
                vec![bytes(
                    CKA_EC_PARAMS,
                    &x509_cert::der::Encode::to_der(&curve.oid())
                        .map_err(|e| CliError::malformed("curve OID", e))?,
                )],
            ),
            KeyType::Ed25519 => (
                CKM_EC_EDWARDS_KEY_PAIR_GEN,
                vec![bytes(CKA_EC_PARAMS, ED25519_PARAMS)],
            ),
            KeyType::Rsa(bits) => (
                CKM_RSA_PKCS_KEY_PAIR_GEN,
                vec![
                    ulong(CKA_MODULUS_BITS, bits as CK_ULONG),
                    bytes(CKA_PUBLIC_EXPONENT, &[1, 0, 1]),
                ],
            ),
        };
        public.extend([
            flag(CKA_TOKEN, true),
            flag(CKA_PRIVATE, false),
            flag(CKA_VERIFY, true),
            flag(CKA_ENCRYPT, usage.decrypt),
            flag(CKA_WRAP, usage.unwrap),
            bytes(CKA_LABEL, label.as_bytes()),
            bytes(CKA_ID, &id),
        ]);
        let private = vec![
            flag(CKA_TOKEN, true),
            flag(CKA_PRIVATE, true),
            flag(CKA_SENSITIVE, true),
            flag(CKA_EXTRACTABLE, false),
            flag(CKA_SIGN, usage.sign),
            flag(CKA_DECRYPT, usage.decrypt),
            flag(CKA_UNWRAP, usage.unwrap),
            flag(CKA_DERIVE, usage.derive),
            bytes(CKA_LABEL, label.as_bytes()),
            bytes(CKA_ID, &id),
        ];
        let session_handle = session.handle();
        match session.conn().call(RequestBody::GenerateKeyPair {
            session: session_handle,
            mechanism,
            public_template: public,
            private_template: private,
        })? {
            ReplyBody::KeyPair { .. } => {}
            _ => return Err(CliError::UnexpectedReply),
        }
        let pair = resolve(session, &label, Some(&id))?;
        let kind = pair[0].public.kind();
        if args.json() {
            println!(
                "{}",
                json!({"label": label, "id": hex(&id), "type": kind, "usage": usage.names()})
            );
        } else {
            println!(
                "generated {kind} key \"{label}\" id {} on the card (usage: {}; private key sensitive, never extractable)",
                hex(&id),
                usage.names().join(",")
            );
        }
        Ok(())
    })
}

fn random(session: &mut Session<'_>, len: u32) -> Result<Vec<u8>, CliError> {
    let handle = session.handle();
    match session.conn().call(RequestBody::GenerateRandom {
        session: handle,
        len,
    })? {
        ReplyBody::Bytes(b) if b.len() == len as usize => Ok(b),
        _ => Err(CliError::UnexpectedReply),
    }
}

/// One key pair as `list` shows it.
struct PairSummary {
    label: String,
    id: Vec<u8>,
    kind: String,
    private: bool,
    public: bool,
    usage: Option<Usage>,
}

/// `list [--login] [--json]`: key pairs and certificates. Private keys are
/// seen only after a user login, done when a PIN comes from a file or the
/// environment, or with `--login` (prompting).
pub fn list(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let mut session = conn.open_session(slot)?;
    let logged_in = if args.flag("login") || pin::non_interactive(args, PinKind::User)?.is_some() {
        user_login(&mut session, args)?;
        true
    } else {
        false
    };
    let objects = key_objects(&mut session, None, None)?;
    let mut pairs: Vec<PairSummary> = Vec::new();
    for o in &objects {
        let entry = match pairs
            .iter_mut()
            .find(|p| p.label == o.label && p.id == o.id)
        {
            Some(e) => e,
            None => {
                pairs.push(PairSummary {
                    label: o.label.clone(),
                    id: o.id.clone(),
                    kind: o.public.kind(),
                    private: false,
                    public: false,
                    usage: None,
                });
                pairs.last_mut().expect("just pushed")
            }
        };
        if o.class == CKO_PRIVATE_KEY {
            entry.private = true;
            entry.usage = o.usage;
        } else {
            entry.public = true;
        }
    }
    let certs = cert::certificates(&mut session)?;
    if args.json() {
        let keys: Vec<_> = pairs
            .iter()
            .map(|p| {
                json!({
                    "label": p.label,
                    "id": hex(&p.id),
                    "type": p.kind,
                    // Unknown (null) without a login: private keys are hidden.
                    "private_key": if logged_in { json!(p.private) } else { json!(null) },
                    "public_key": p.public,
                    "usage": p.usage.map(|u| u.names()),
                })
            })
            .collect();
        let certs: Vec<_> = certs.iter().map(cert::CertSummary::json).collect();
        println!(
            "{}",
            json!({"logged_in": logged_in, "keys": keys, "certificates": certs})
        );
        return Ok(());
    }
    println!("keys:");
    if pairs.is_empty() {
        println!("  (none)");
    }
    for p in &pairs {
        let halves = match (logged_in, p.private, p.public) {
            (false, _, _) => "public key (log in to see the private key)".to_string(),
            (true, true, true) => "key pair".to_string(),
            (true, true, false) => "private key only".to_string(),
            (true, false, _) => "public key only".to_string(),
        };
        let usage = p
            .usage
            .map(|u| format!(" usage {}", u.names().join(",")))
            .unwrap_or_default();
        println!(
            "  {:<24} id {} {:<9} {halves}{usage}",
            p.label,
            hex(&p.id),
            p.kind
        );
    }
    println!("certificates:");
    if certs.is_empty() {
        println!("  (none)");
    }
    for c in &certs {
        c.print();
    }
    Ok(())
}

/// `delete --label L [--id HEX] [--yes]`: the key pair and its
/// certificates.
pub fn delete(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let label = args.required("label")?.to_string();
    let id = args.id()?;
    with_user_session(args, |session| {
        let keys = resolve(session, &label, id.as_deref())?;
        let id = keys[0].id.clone();
        let certs = if id.is_empty() {
            Vec::new()
        } else {
            cert::certificates_of(session, &id)?
        };
        let what = format!(
            "{} key object(s) and {} certificate(s) labelled \"{label}\" with id {}",
            keys.len(),
            certs.len(),
            hex(&id)
        );
        if !args.flag("yes") {
            let question = format!("Delete {what}? This cannot be undone. [y/N] ");
            match pin::confirm(&question) {
                Ok(true) => {}
                Ok(false) => return Err(CliError::Rejected("not deleted".into())),
                Err(_) => {
                    return Err(CliError::Usage(
                        "delete needs --yes when not run on a terminal".into(),
                    ))
                }
            }
        }
        // Certificates first, the private key last: an interruption leaves
        // a key without a certificate, never a certificate without its key.
        let mut order: Vec<u64> = certs.iter().map(|c| c.handle).collect();
        order.extend(
            keys.iter()
                .filter(|k| k.class == CKO_PUBLIC_KEY)
                .map(|k| k.handle),
        );
        order.extend(
            keys.iter()
                .filter(|k| k.class == CKO_PRIVATE_KEY)
                .map(|k| k.handle),
        );
        for handle in order {
            session.destroy(handle)?;
        }
        if args.json() {
            println!(
                "{}",
                json!({"deleted": {"label": label, "id": hex(&id), "keys": keys.len(), "certificates": certs.len()}})
            );
        } else {
            println!("deleted {what}");
        }
        Ok(())
    })
}

/// `export-public --key L [--id HEX] [--out FILE]`: the public key as PEM.
pub fn export_public(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let label = args.required("key")?.to_string();
    let id = args.id()?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let mut session = conn.open_session(slot)?;
    // The public key object needs no login; without one, the private
    // key's copy of the public values does.
    let keys = match resolve(&mut session, &label, id.as_deref()) {
        Err(CliError::NotFound { .. }) if pin::non_interactive(args, PinKind::User)?.is_some() => {
            user_login(&mut session, args)?;
            resolve(&mut session, &label, id.as_deref())?
        }
        other => other?,
    };
    let pem = keys[0].public.pem()?;
    match args.value("out")? {
        Some(path) => std::fs::write(path, &pem).map_err(|e| CliError::File(path.into(), e))?,
        None => print!("{pem}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types() {
        assert_eq!(KeyType::parse("ec-p384").unwrap(), KeyType::Ec(Curve::P384));
        assert_eq!(KeyType::parse("rsa-4096").unwrap(), KeyType::Rsa(4096));
        assert!(KeyType::parse("rsa-1024").is_err());
        assert_eq!(KeyType::parse("ed25519").unwrap(), KeyType::Ed25519);
        assert!(KeyType::parse("ed448").is_err());
    }

    #[test]
    fn usage_defaults_to_sign_only() {
        let u = Usage::parse(None).unwrap();
        assert_eq!(u.names(), ["sign"]);
        let u = Usage::parse(Some("sign,decrypt")).unwrap();
        assert!(u.sign && u.decrypt && !u.unwrap && !u.derive);
        assert!(Usage::parse(Some("encrypt")).is_err());
        assert!(Usage::parse(Some("")).is_err());
    }
}
