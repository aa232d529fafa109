//! Certificates on the token: `cert import` (beside its key, after
//! checking that the certificate's public key is the key's), the CA chain
//! as authority certificates, and the summaries `list` shows.
//!
//! A key's certificate is a CKO_CERTIFICATE / CKC_X_509 token object with
//! the key's CKA_ID and CKA_LABEL, CKA_CERTIFICATE_CATEGORY 1 (token user),
//! and CKA_SUBJECT, CKA_ISSUER, CKA_SERIAL_NUMBER (the DER INTEGER) and
//! CKA_VALUE taken from the certificate itself. Chain certificates get
//! category 2 (authority), their subject's common name as label and no id.

use std::path::Path;
use std::time::SystemTime;

use cryptoki_sys::*;
use serde_json::json;
use x509_cert::der::{Decode, Encode};
use x509_cert::Certificate;

use crate::args::{hex, Args};
use crate::client::{bytes, flag, ulong, Session};
use crate::error::CliError;
use crate::keys;
use crate::public_key::PublicKey;

/// CKA_CERTIFICATE_CATEGORY values (PKCS#11 2.40 §4.6.2).
const CATEGORY_TOKEN_USER: CK_ULONG = 1;
const CATEGORY_AUTHORITY: CK_ULONG = 2;

/// A stored certificate as `list` and `delete` see it.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub handle: u64,
    pub label: String,
    pub id: Vec<u8>,
    pub category: u64,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
}

impl CertSummary {
    fn category_name(&self) -> &'static str {
        match self.category as CK_ULONG {
            CATEGORY_TOKEN_USER => "token-user",
            CATEGORY_AUTHORITY => "authority",
            3 => "other-entity",
            _ => "unspecified",
        }
    }

    /// The summary as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "label": self.label,
            "id": hex(&self.id),
            "category": self.category_name(),
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before,
            "not_after": self.not_after,
        })
    }

    /// The summary as two lines of text.
    pub fn print(&self) {
        println!(
            "  {:<24} id {} {} subject \"{}\"",
            self.label,
            hex(&self.id),
            self.category_name(),
            self.subject
        );
        println!(
            "  {:<24} issuer \"{}\" serial {} valid {} to {}",
            "", self.issuer, self.serial, self.not_before, self.not_after
        );
    }
}

/// Every visible certificate.
pub fn certificates(session: &mut Session<'_>) -> Result<Vec<CertSummary>, CliError> {
    find_certificates(session, vec![ulong(CKA_CLASS, CKO_CERTIFICATE)])
}

/// The certificates carrying CKA_ID `id`.
pub fn certificates_of(session: &mut Session<'_>, id: &[u8]) -> Result<Vec<CertSummary>, CliError> {
    find_certificates(
        session,
        vec![ulong(CKA_CLASS, CKO_CERTIFICATE), bytes(CKA_ID, id)],
    )
}

fn find_certificates(
    session: &mut Session<'_>,
    template: Vec<mesign_proto::Attribute>,
) -> Result<Vec<CertSummary>, CliError> {
    let mut out = Vec::new();
    for handle in session.find(template)? {
        let v = session.attributes(
            handle,
            &[CKA_LABEL, CKA_ID, CKA_CERTIFICATE_CATEGORY, CKA_VALUE],
        )?;
        let value = v[3].as_deref().unwrap_or_default();
        let cert = Certificate::from_der(value)
            .map_err(|e| CliError::malformed(format!("certificate object {handle}"), e))?;
        let tbs = &cert.tbs_certificate;
        out.push(CertSummary {
            handle,
            label: String::from_utf8_lossy(v[0].as_deref().unwrap_or_default()).into_owned(),
            id: v[1].clone().unwrap_or_default(),
            category: v[2]
                .as_deref()
                .and_then(mesign_proto::attr::read_ulong)
                .unwrap_or(0),
            subject: tbs.subject.to_string(),
            issuer: tbs.issuer.to_string(),
            serial: hex(tbs.serial_number.as_bytes()),
            not_before: tbs.validity.not_before.to_date_time().to_string(),
            not_after: tbs.validity.not_after.to_date_time().to_string(),
        });
    }
    Ok(out)
}

/// Reads one certificate (PEM or DER) from `path`.
fn read_certificate(path: &Path) -> Result<Certificate, CliError> {
    let mut chain = read_certificates(path)?;
    match chain.len() {
        1 => Ok(chain.remove(0)),
        n => Err(CliError::malformed(
            path.display().to_string(),
            format!("holds {n} certificates; give the key's certificate alone and the CA certificates with --chain"),
        )),
    }
}

/// Reads every certificate (PEM blocks, or one DER certificate) in `path`.
fn read_certificates(path: &Path) -> Result<Vec<Certificate>, CliError> {
    let data = std::fs::read(path).map_err(|e| CliError::File(path.to_path_buf(), e))?;
    let what = || path.display().to_string();
    let certs = if data.starts_with(b"-----BEGIN") || data.windows(11).any(|w| w == b"-----BEGIN ")
    {
        Certificate::load_pem_chain(&data).map_err(|e| CliError::malformed(what(), e))?
    } else {
        vec![Certificate::from_der(&data).map_err(|e| CliError::malformed(what(), e))?]
    };
    if certs.is_empty() {
        return Err(CliError::malformed(what(), "no certificate found"));
    }
    Ok(certs)
}

/// The template attributes every stored certificate carries.
fn certificate_template(
    cert: &Certificate,
    label: &str,
    id: &[u8],
    category: CK_ULONG,
) -> Result<Vec<mesign_proto::Attribute>, CliError> {
    let enc = |e| CliError::malformed("re-encoding the certificate", e);
    let tbs = &cert.tbs_certificate;
    Ok(vec![
        ulong(CKA_CLASS, CKO_CERTIFICATE),
        ulong(CKA_CERTIFICATE_TYPE, CKC_X_509),
        flag(CKA_TOKEN, true),
        flag(CKA_PRIVATE, false),
        bytes(CKA_LABEL, label.as_bytes()),
        bytes(CKA_ID, id),
        bytes(CKA_SUBJECT, &tbs.subject.to_der().map_err(enc)?),
        bytes(CKA_ISSUER, &tbs.issuer.to_der().map_err(enc)?),
        bytes(CKA_SERIAL_NUMBER, &tbs.serial_number.to_der().map_err(enc)?),
        bytes(CKA_VALUE, &cert.to_der().map_err(enc)?),
        ulong(CKA_CERTIFICATE_CATEGORY, category),
    ])
}

/// Refuses a certificate that has expired.
fn check_not_expired(cert: &Certificate, what: &str) -> Result<(), CliError> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let validity = &cert.tbs_certificate.validity;
    if validity.not_after.to_unix_duration() < now {
        return Err(CliError::Rejected(format!(
            "{what} expired on {}",
            validity.not_after.to_date_time()
        )));
    }
    if validity.not_before.to_unix_duration() > now {
        eprintln!(
            "mesign-hsm: note: {what} is valid only from {}",
            validity.not_before.to_date_time()
        );
    }
    Ok(())
}

/// The common name of a certificate's subject, or the whole subject.
fn display_name(cert: &Certificate) -> String {
    const CN: x509_cert::der::asn1::ObjectIdentifier =
        x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    let subject = &cert.tbs_certificate.subject;
    subject
        .0
        .iter()
        .rev()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == CN)
        .and_then(|atv| {
            x509_cert::der::asn1::Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_string())
                .or_else(|_| {
                    x509_cert::der::asn1::PrintableStringRef::try_from(&atv.value)
                        .map(|s| s.as_str().to_string())
                })
                .ok()
        })
        .unwrap_or_else(|| subject.to_string())
}

/// `cert import --key L CERT [--id HEX] [--chain FILE] [--replace]`.
pub fn import(args: &Args) -> Result<(), CliError> {
    let label = args.required("key")?.to_string();
    let id = args.id()?;
    let cert = read_certificate(Path::new(args.single_positional("a certificate file")?))?;
    let chain = match args.value("chain")? {
        Some(path) => read_certificates(Path::new(path))?,
        None => Vec::new(),
    };
    check_not_expired(&cert, "the certificate")?;
    let mut conn = crate::client::Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let mut session = conn.open_session(slot)?;
    keys::user_login(&mut session, args)?;
    let key = keys::resolve(&mut session, &label, id.as_deref())?;
    let key_id = key[0].id.clone();
    let cert_key = PublicKey::from_spki(&cert.tbs_certificate.subject_public_key_info)?;
    if cert_key != key[0].public {
        return Err(CliError::Rejected(format!(
            "the certificate's public key ({}) is not the public key of \"{label}\" ({}): refusing to store it",
            cert_key.kind(),
            key[0].public.kind()
        )));
    }
    if key_id.is_empty() {
        return Err(CliError::Rejected(format!(
            "key \"{label}\" has no CKA_ID, so a certificate could not be tied to it"
        )));
    }
    let old = certificates_of(&mut session, &key_id)?;
    if !old.is_empty() && !args.flag("replace") {
        return Err(CliError::Exists {
            what: "a certificate for key",
            value: format!("\"{label}\" (add --replace to replace it)"),
        });
    }
    let template = certificate_template(&cert, &label, &key_id, CATEGORY_TOKEN_USER)?;
    session.create(template)?;
    for c in &old {
        session.destroy(c.handle)?;
    }
    let mut imported_ca = Vec::new();
    for ca in &chain {
        let value = ca
            .to_der()
            .map_err(|e| CliError::malformed("re-encoding a chain certificate", e))?;
        let present = session.find(vec![
            ulong(CKA_CLASS, CKO_CERTIFICATE),
            bytes(CKA_VALUE, &value),
        ])?;
        if !present.is_empty() {
            continue;
        }
        let name = display_name(ca);
        session.create(certificate_template(ca, &name, &[], CATEGORY_AUTHORITY)?)?;
        imported_ca.push(name);
    }
    let subject = cert.tbs_certificate.subject.to_string();
    if args.json() {
        println!(
            "{}",
            json!({"label": label, "id": hex(&key_id), "subject": subject,
                   "replaced": old.len(), "chain_imported": imported_ca})
        );
    } else {
        println!(
            "stored the certificate \"{subject}\" for key \"{label}\" (id {}){}",
            hex(&key_id),
            if old.is_empty() {
                ""
            } else {
                ", replacing the old one"
            }
        );
        for name in imported_ca {
            println!("stored the CA certificate \"{name}\"");
        }
    }
    Ok(())
}
