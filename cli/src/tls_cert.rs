//! `domain tls-cert`: the certificates boxes and signing servers present to
//! each other over mutual TLS, issued by the cloning domain's CA.
//!
//! The CA's private key is derived inside each card of the domain from the
//! domain key and never leaves it: this command builds the certificates
//! (`rcgen`) and has the card sign their to-be-signed bytes, so every card
//! of the domain issues under the same CA (same subject, same key) and no
//! other card can. The TLS key pair itself is made here, in this process:
//! it is a transport credential of the box or signing server, not a token
//! key, and is written to `NAME.key` (mode 0600).
//!
//! A box certificate (`CN=mesign-box:NAME`, serverAuth and clientAuth)
//! serves a daemon's listener and authenticates it to its peers for
//! replication; `--client` makes a signing server's certificate
//! (`CN=mesign-client:NAME`, clientAuth only), which daemons accept for
//! PKCS#11 requests but never for replication.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::PathBuf;

use cryptoki_sys::*;
use mesign_proto::{ReplyBody, RequestBody};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
    SigningKey,
};
use serde_json::json;

use crate::args::Args;
use crate::client::{Connection, Session};
use crate::domain::{domain_of, output_dir, write_new};
use crate::error::CliError;
use crate::pin::{self, PinKind};

/// How long a box or client certificate is valid.
const VALIDITY_DAYS: i64 = 5 * 365;

/// `domain tls-cert --name NAME --out-dir DIR [--ip A]... [--dns H]... [--client]`.
pub fn issue(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let name = args.required("name")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CliError::Usage(
            "--name: letters, digits, '-', '_' and '.' only (it names the files)".into(),
        ));
    }
    let client = args.flag("client");
    let mut names = Vec::new();
    for ip in args.values("ip") {
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| CliError::Usage(format!("--ip {ip:?} is not an IP address")))?;
        names.push(SanType::IpAddress(ip));
    }
    for dns in args.values("dns") {
        let dns = dns
            .as_str()
            .try_into()
            .map_err(|_| CliError::Usage(format!("--dns {dns:?} is not a host name")))?;
        names.push(SanType::DnsName(dns));
    }
    if names.is_empty() && !client {
        return Err(CliError::Usage(
            "a box certificate needs the address its peers dial: --ip and/or --dns".into(),
        ));
    }
    let out_dir = PathBuf::from(args.required("out-dir")?);
    let (crt, key_file, ca_file) = (
        out_dir.join(format!("{name}.crt")),
        out_dir.join(format!("{name}.key")),
        out_dir.join("domain-ca.crt"),
    );
    output_dir(&out_dir)?;
    for path in [&crt, &key_file] {
        if path.exists() {
            return Err(CliError::Exists {
                what: "file",
                value: path.display().to_string(),
            });
        }
    }

    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let Some(domain) = domain_of(&mut conn, slot)? else {
        return Err(CliError::Rejected(
            "the card is in no cloning domain: the TLS CA is derived from the domain key, so run `domain create` or `domain join` first".into(),
        ));
    };
    let ca_public = match conn.call(RequestBody::DomainCaPublic { slot })? {
        ReplyBody::Bytes(public) => public,
        _ => return Err(CliError::UnexpectedReply),
    };
    let so_pin = pin::read_pin(args, PinKind::So, "SO PIN: ", false)?;
    let mut session = conn.open_session(slot)?;
    session.login(CKU_SO, &so_pin)?;
    let card = CardCa {
        public: ca_public,
        session: RefCell::new(session),
        failure: RefCell::new(None),
    };

    let ca_params = ca_params(&domain);
    let ca_cert = ca_params.self_signed(&card).map_err(|e| card.failed(e))?;
    let key = KeyPair::generate().map_err(|e| CliError::malformed("TLS key", e))?;
    let leaf = leaf_params(name, client, names)?;
    let issuer = Issuer::new(ca_params, &card);
    let cert = leaf.signed_by(&key, &issuer).map_err(|e| card.failed(e))?;

    write_new(&key_file, key.serialize_pem().as_bytes())?;
    write_new(&crt, cert.pem().as_bytes())?;
    std::fs::write(&ca_file, ca_cert.pem()).map_err(|e| CliError::File(ca_file.clone(), e))?;
    if args.json() {
        println!(
            "{}",
            json!({"domain": domain, "kind": if client { "client" } else { "box" },
                   "cert": crt.display().to_string(), "key": key_file.display().to_string(),
                   "ca": ca_file.display().to_string()})
        );
    } else {
        println!(
            "{} certificate {} (key {}, mode 0600) under the domain CA {} of domain {domain}",
            if client { "client" } else { "box" },
            crt.display(),
            key_file.display(),
            ca_file.display()
        );
    }
    Ok(())
}

/// The domain CA: the same subject, serial and validity on every card of
/// the domain, so its certificate differs between issues only in its
/// signature.
fn ca_params(domain: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "MeSign HSM");
    dn.push(DnType::CommonName, format!("MeSign domain CA {domain}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let mut serial = crate::args::parse_hex(domain).unwrap_or_default();
    serial.truncate(16);
    if let Some(first) = serial.first_mut() {
        *first &= 0x7f;
    }
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params
}

fn leaf_params(
    name: &str,
    client: bool,
    names: Vec<SanType>,
) -> Result<CertificateParams, CliError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "MeSign HSM");
    let prefix = if client {
        "mesign-client"
    } else {
        "mesign-box"
    };
    dn.push(DnType::CommonName, format!("{prefix}:{name}"));
    params.distinguished_name = dn;
    params.subject_alt_names = names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if client {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    } else {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    };
    params.use_authority_key_identifier_extension = true;
    let now = time_now();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| CliError::Rejected("no randomness".into()))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(params)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The domain CA key as `rcgen` sees it: its public key, and a signature
/// the card makes over each to-be-signed certificate.
struct CardCa<'c> {
    public: Vec<u8>,
    session: RefCell<Session<'c>>,
    /// Why the card refused, for the message (rcgen only says "remote").
    failure: RefCell<Option<CliError>>,
}

impl CardCa<'_> {
    fn failed(&self, e: rcgen::Error) -> CliError {
        self.failure
            .borrow_mut()
            .take()
            .unwrap_or_else(|| CliError::malformed("certificate", e))
    }
}

impl PublicKeyData for CardCa<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for CardCa<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let mut session = self.session.borrow_mut();
        let request = RequestBody::DomainCaSign {
            session: session.handle(),
            tbs: msg.to_vec(),
        };
        match session.conn().call(request) {
            Ok(ReplyBody::Bytes(signature)) => Ok(signature),
            Ok(_) => {
                *self.failure.borrow_mut() = Some(CliError::UnexpectedReply);
                Err(rcgen::Error::RemoteKeyError)
            }
            Err(e) => {
                *self.failure.borrow_mut() = Some(e);
                Err(rcgen::Error::RemoteKeyError)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_and_client_certificates_differ_in_usage_and_name() {
        let boxed = leaf_params("a", false, vec![]).unwrap();
        assert!(boxed
            .extended_key_usages
            .contains(&ExtendedKeyUsagePurpose::ServerAuth));
        let client = leaf_params("a", true, vec![]).unwrap();
        assert_eq!(
            client.extended_key_usages,
            [ExtendedKeyUsagePurpose::ClientAuth]
        );
        let ca = ca_params("00ff11");
        assert_eq!(
            ca.serial_number,
            Some(SerialNumber::from_slice(&[0, 0xff, 0x11]))
        );
    }
}
