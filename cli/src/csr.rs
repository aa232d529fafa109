//! `csr`: a PKCS#10 certificate request for a key on the card, built with
//! RustCrypto's `x509-cert` request builder and signed by the card through
//! the daemon's Sign request. The request is parsed back and its signature
//! verified with aws-lc-rs before it is written: an invalid request is
//! never written.
//!
//! Why `x509-cert`: it is maintained with the RustCrypto formats, lets the
//! signer be any type implementing the `signature` traits (here: a key on
//! the card) and any signature algorithm identifier (so RSASSA-PSS works),
//! and the daemon parses certificates with the same crate. rcgen, the other
//! candidate, dropped RSA-PSS.
//!
//! Signatures: ECDSA with the hash matching the curve (P-256 SHA-256,
//! P-384 SHA-384, P-521 SHA-512; the card's raw `r || s` is DER-encoded
//! for X.509), RSA PKCS#1 v1.5 with SHA-256, or with `--rsa-pss`
//! RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.

use std::cell::RefCell;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as verify, UnparsedPublicKey};
use cryptoki_sys::*;
use mesign_proto::{HashAlg, ReplyBody, RequestBody, SignScheme};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::{Builder, RequestBuilder};
use x509_cert::der::asn1::{
    BitString, Ia5String, Ia5StringRef, ObjectIdentifier, PrintableStringRef, SetOfVec,
};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::{Any, Decode, Document, Encode, Reader, SliceReader, Tag};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::ext::AsExtension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::CertReq;
use x509_cert::spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding,
};

use crate::args::Args;
use crate::client::{Connection, Session};
use crate::error::CliError;
use crate::keys;
use crate::public_key::{pem_block, Curve, PublicKey};

/// The signature algorithms a request can be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    EcdsaSha256,
    EcdsaSha384,
    EcdsaSha512,
    RsaPkcs1Sha256,
    RsaPssSha256,
    /// Pure Ed25519 (RFC 8410): the card signs the whole request.
    Ed25519,
}

impl SigAlg {
    /// The algorithm for `key`, PSS if asked (RSA only).
    pub fn for_key(key: &PublicKey, pss: bool) -> Result<SigAlg, CliError> {
        match (key, pss) {
            (PublicKey::Ec { .. } | PublicKey::Ed25519 { .. }, true) => {
                Err(CliError::Usage("--rsa-pss needs an RSA key".into()))
            }
            (PublicKey::Ed25519 { .. }, false) => Ok(SigAlg::Ed25519),
            (
                PublicKey::Ec {
                    curve: Curve::P256, ..
                },
                false,
            ) => Ok(SigAlg::EcdsaSha256),
            (
                PublicKey::Ec {
                    curve: Curve::P384, ..
                },
                false,
            ) => Ok(SigAlg::EcdsaSha384),
            (
                PublicKey::Ec {
                    curve: Curve::P521, ..
                },
                false,
            ) => Ok(SigAlg::EcdsaSha512),
            (PublicKey::Rsa { .. }, false) => Ok(SigAlg::RsaPkcs1Sha256),
            (PublicKey::Rsa { .. }, true) => Ok(SigAlg::RsaPssSha256),
        }
    }

    /// The DER AlgorithmIdentifier (RFC 5758, RFC 4055). The PSS
    /// parameters name SHA-256 (with NULL parameters, as RFC 4055 and most
    /// verifiers expect), MGF1 with SHA-256, salt length 32.
    fn identifier_der(self) -> &'static [u8] {
        match self {
            SigAlg::EcdsaSha256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            SigAlg::EcdsaSha384 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
            ],
            SigAlg::EcdsaSha512 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
            ],
            SigAlg::RsaPkcs1Sha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
            SigAlg::RsaPssSha256 => &[
                0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
                0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
                0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20,
            ],
            // id-Ed25519 with absent parameters (RFC 8410 §3).
            SigAlg::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
        }
    }

    fn identifier(self) -> Result<AlgorithmIdentifierOwned, x509_cert::der::Error> {
        AlgorithmIdentifierOwned::from_der(self.identifier_der())
    }

    fn digest(self) -> (&'static digest::Algorithm, HashAlg) {
        match self {
            SigAlg::EcdsaSha384 => (&digest::SHA384, HashAlg::Sha384),
            SigAlg::EcdsaSha512 => (&digest::SHA512, HashAlg::Sha512),
            _ => (&digest::SHA256, HashAlg::Sha256),
        }
    }

    /// The Sign request's mechanism and scheme for a digest.
    fn mechanism(self) -> (CK_MECHANISM_TYPE, SignScheme) {
        match self {
            SigAlg::EcdsaSha256 | SigAlg::EcdsaSha384 | SigAlg::EcdsaSha512 => {
                (CKM_ECDSA, SignScheme::Ecdsa)
            }
            SigAlg::RsaPkcs1Sha256 => (CKM_SHA256_RSA_PKCS, SignScheme::RsaPkcs1(HashAlg::Sha256)),
            SigAlg::RsaPssSha256 => (
                CKM_SHA256_RSA_PKCS_PSS,
                SignScheme::RsaPss {
                    hash: HashAlg::Sha256,
                    mgf_hash: HashAlg::Sha256,
                    salt_len: 32,
                },
            ),
            SigAlg::Ed25519 => (CKM_EDDSA, SignScheme::Ed25519),
        }
    }

    fn verification(self) -> &'static dyn verify::VerificationAlgorithm {
        match self {
            SigAlg::EcdsaSha256 => &verify::ECDSA_P256_SHA256_ASN1,
            SigAlg::EcdsaSha384 => &verify::ECDSA_P384_SHA384_ASN1,
            SigAlg::EcdsaSha512 => &verify::ECDSA_P521_SHA512_ASN1,
            SigAlg::RsaPkcs1Sha256 => &verify::RSA_PKCS1_2048_8192_SHA256,
            SigAlg::RsaPssSha256 => &verify::RSA_PSS_2048_8192_SHA256,
            SigAlg::Ed25519 => &verify::ED25519,
        }
    }

    fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SigAlg::EcdsaSha256 | SigAlg::EcdsaSha384 | SigAlg::EcdsaSha512
        )
    }
}

/// ECDSA's raw `r || s` (each half the same length) as the DER
/// `Ecdsa-Sig-Value` X.509 carries (RFC 5480).
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, CliError> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(CliError::malformed(
            "the card's ECDSA signature",
            format!("{} bytes is not r || s", raw.len()),
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let fail = |e| CliError::malformed("encoding the ECDSA signature", e);
    vec![
        x509_cert::der::asn1::UintRef::new(r).map_err(fail)?,
        x509_cert::der::asn1::UintRef::new(s).map_err(fail)?,
    ]
    .to_der()
    .map_err(fail)
}

/// A key on the card, as a signer for the x509-cert builder.
struct CardSigner<'s, 'c> {
    session: RefCell<&'s mut Session<'c>>,
    key: u64,
    alg: SigAlg,
    spki: SpkiDer,
    /// Why the last signature failed; the `signature` error cannot carry it.
    failure: RefCell<Option<CliError>>,
}

/// A SubjectPublicKeyInfo in DER, as the builder's verifying key.
#[derive(Clone)]
struct SpkiDer(Vec<u8>);

impl EncodePublicKey for SpkiDer {
    fn to_public_key_der(&self) -> x509_cert::spki::Result<Document> {
        Ok(Document::from_der(&self.0)?)
    }
}

/// A signature in the form X.509 carries it.
struct CardSignature(Vec<u8>);

impl SignatureBitStringEncoding for CardSignature {
    fn to_bitstring(&self) -> x509_cert::der::Result<BitString> {
        BitString::from_bytes(&self.0)
    }
}

impl signature::Keypair for CardSigner<'_, '_> {
    type VerifyingKey = SpkiDer;

    fn verifying_key(&self) -> SpkiDer {
        self.spki.clone()
    }
}

impl DynSignatureAlgorithmIdentifier for CardSigner<'_, '_> {
    fn signature_algorithm_identifier(&self) -> x509_cert::spki::Result<AlgorithmIdentifierOwned> {
        Ok(self.alg.identifier()?)
    }
}

impl CardSigner<'_, '_> {
    fn sign_on_card(&self, msg: &[u8]) -> Result<Vec<u8>, CliError> {
        // Pure Ed25519 cannot sign a digest: the request itself goes.
        let input = if self.alg == SigAlg::Ed25519 {
            msg.to_vec()
        } else {
            let (algorithm, _) = self.alg.digest();
            digest::digest(algorithm, msg).as_ref().to_vec()
        };
        let (mechanism, scheme) = self.alg.mechanism();
        let mut session = self.session.borrow_mut();
        let handle = session.handle();
        let signature = match session.conn().call(RequestBody::Sign {
            session: handle,
            key: self.key,
            mechanism,
            scheme,
            input,
        })? {
            ReplyBody::Bytes(signature) => signature,
            _ => return Err(CliError::UnexpectedReply),
        };
        if self.alg.is_ecdsa() {
            ecdsa_raw_to_der(&signature)
        } else {
            Ok(signature)
        }
    }
}

impl signature::Signer<CardSignature> for CardSigner<'_, '_> {
    fn try_sign(&self, msg: &[u8]) -> Result<CardSignature, signature::Error> {
        self.sign_on_card(msg).map(CardSignature).map_err(|e| {
            *self.failure.borrow_mut() = Some(e);
            signature::Error::new()
        })
    }
}

/// ExtendedKeyUsage marked non-critical. x509-cert marks it critical, which
/// RFC 5280 allows, but verifiers that check a usage of their own (NSS, and
/// so poppler, checks e-mail signing) then reject a certificate whose EKU
/// they do not know; CAs usually issue it non-critical.
struct NonCriticalEku(ExtendedKeyUsage);

impl AssociatedOid for NonCriticalEku {
    const OID: ObjectIdentifier = ExtendedKeyUsage::OID;
}

impl Encode for NonCriticalEku {
    fn encoded_len(&self) -> x509_cert::der::Result<x509_cert::der::Length> {
        self.0.encoded_len()
    }

    fn encode(&self, writer: &mut impl x509_cert::der::Writer) -> x509_cert::der::Result<()> {
        self.0.encode(writer)
    }
}

impl AsExtension for NonCriticalEku {
    fn critical(&self, _subject: &Name, _extensions: &[x509_cert::ext::Extension]) -> bool {
        false
    }
}

/// Attribute names accepted in `--subject`, their OIDs and string types.
const NAME_ATTRIBUTES: &[(&[&str], &str, Tag)] = &[
    (&["CN", "commonName"], "2.5.4.3", Tag::Utf8String),
    (&["O", "organizationName"], "2.5.4.10", Tag::Utf8String),
    (
        &["OU", "organizationalUnitName"],
        "2.5.4.11",
        Tag::Utf8String,
    ),
    (&["C", "countryName"], "2.5.4.6", Tag::PrintableString),
    (&["L", "localityName"], "2.5.4.7", Tag::Utf8String),
    (&["ST", "stateOrProvinceName"], "2.5.4.8", Tag::Utf8String),
    (&["STREET", "streetAddress"], "2.5.4.9", Tag::Utf8String),
    (
        &["serialNumber", "SERIALNUMBER"],
        "2.5.4.5",
        Tag::PrintableString,
    ),
    (&["GN", "givenName"], "2.5.4.42", Tag::Utf8String),
    (&["SN", "surname"], "2.5.4.4", Tag::Utf8String),
    (&["title"], "2.5.4.12", Tag::Utf8String),
    (&["organizationIdentifier"], "2.5.4.97", Tag::Utf8String),
    (
        &["E", "emailAddress"],
        "1.2.840.113549.1.9.1",
        Tag::Ia5String,
    ),
    (
        &["DC", "domainComponent"],
        "0.9.2342.19200300.100.1.25",
        Tag::Ia5String,
    ),
];

/// Parses `CN=…,O=…,C=…`: written most specific first, as RFC 4514 and
/// `openssl x509 -nameopt RFC2253` write names, so encoded in reverse.
/// A comma inside a value is written `\,`. Country and serial number are
/// PrintableString, e-mail and domain components IA5String, the rest
/// UTF8String (RFC 5280).
pub fn parse_subject(s: &str) -> Result<Name, CliError> {
    let bad = |why: String| CliError::Usage(format!("--subject {s:?}: {why}"));
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.push(
                chars
                    .next()
                    .ok_or_else(|| bad("ends with a backslash".into()))?,
            ),
            ',' => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    let mut rdns = Vec::new();
    for part in parts.iter().rev() {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not NAME=value")))?;
        let (name, value) = (name.trim(), value.trim());
        let &(_, oid, tag) = NAME_ATTRIBUTES
            .iter()
            .find(|(names, _, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .ok_or_else(|| bad(format!("unknown attribute {name}")))?;
        if value.is_empty() {
            return Err(bad(format!("{name} is empty")));
        }
        let checked = match tag {
            Tag::PrintableString => PrintableStringRef::new(value).map(|_| ()),
            Tag::Ia5String => Ia5StringRef::new(value).map(|_| ()),
            _ => Ok(()),
        };
        checked.map_err(|_| bad(format!("{name} has characters its string type forbids")))?;
        if oid == "2.5.4.6" && value.len() != 2 {
            return Err(bad("C must be a two-letter country code".into()));
        }
        let atv = AttributeTypeAndValue {
            oid: ObjectIdentifier::new_unwrap(oid),
            value: Any::new(tag, value.as_bytes()).map_err(|e| bad(e.to_string()))?,
        };
        let set = SetOfVec::try_from(vec![atv]).map_err(|e| bad(e.to_string()))?;
        rdns.push(RelativeDistinguishedName(set));
    }
    if !rdns.iter().any(|rdn| {
        rdn.0
            .iter()
            .any(|atv| atv.oid == ObjectIdentifier::new_unwrap("2.5.4.3"))
    }) {
        return Err(bad("a CN is required".into()));
    }
    Ok(RdnSequence(rdns))
}

/// Parses `DNS:name`, `email:address` or `URI:uri`.
fn parse_san(s: &str) -> Result<GeneralName, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--san {s}: expected DNS:name, email:address or URI:uri"
        ))
    };
    let (kind, value) = s.split_once(':').ok_or_else(bad)?;
    let ia5 = Ia5String::new(value).map_err(|_| bad())?;
    match kind {
        "DNS" | "dns" => Ok(GeneralName::DnsName(ia5)),
        "email" | "EMAIL" => Ok(GeneralName::Rfc822Name(ia5)),
        "URI" | "uri" => Ok(GeneralName::UniformResourceIdentifier(ia5)),
        _ => Err(bad()),
    }
}

/// The extended key usages `--eku` accepts.
fn parse_eku(s: &str) -> Result<ObjectIdentifier, CliError> {
    Ok(ObjectIdentifier::new_unwrap(match s {
        // id-kp-documentSigning, RFC 9336.
        "document-signing" => "1.3.6.1.5.5.7.3.36",
        "email-protection" => "1.3.6.1.5.5.7.3.4",
        "client-auth" => "1.3.6.1.5.5.7.3.2",
        "code-signing" => "1.3.6.1.5.5.7.3.3",
        "time-stamping" => "1.3.6.1.5.5.7.3.8",
        other => {
            return Err(CliError::Usage(format!(
                "--eku {other}: expected document-signing, email-protection, client-auth, code-signing or time-stamping"
            )))
        }
    }))
}

/// Verifies a DER request: parses it, checks that it names `alg` and
/// carries `key`, and verifies its signature with aws-lc-rs.
pub fn verify_request(der: &[u8], key: &PublicKey, alg: SigAlg) -> Result<CertReq, CliError> {
    let bad = |why: String| CliError::Rejected(format!("the request failed its check: {why}"));
    let req = CertReq::from_der(der).map_err(|e| bad(e.to_string()))?;
    if PublicKey::from_spki(&req.info.public_key)? != *key {
        return Err(bad("it carries another public key".into()));
    }
    if req.algorithm.to_der().map_err(|e| bad(e.to_string()))? != alg.identifier_der() {
        return Err(bad("unexpected signature algorithm".into()));
    }
    // The signed bytes exactly as encoded, not re-encoded.
    let mut reader = SliceReader::new(der).map_err(|e| bad(e.to_string()))?;
    let signed = reader
        .sequence(|r| {
            let info = r.tlv_bytes()?;
            r.tlv_bytes()?; // signatureAlgorithm
            r.tlv_bytes()?; // signature
            Ok(info)
        })
        .map_err(|e| bad(e.to_string()))?;
    let public = req
        .info
        .public_key
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad("malformed public key".into()))?;
    let signature = req
        .signature
        .as_bytes()
        .ok_or_else(|| bad("malformed signature".into()))?;
    UnparsedPublicKey::new(alg.verification(), public)
        .verify(signed, signature)
        .map_err(|_| bad("its signature does not verify".into()))?;
    Ok(req)
}

/// `csr --key L --subject S [--san …] [--eku …] [--rsa-pss] --out FILE`.
pub fn csr(args: &Args) -> Result<(), CliError> {
    args.no_positional()?;
    let label = args.required("key")?.to_string();
    let id = args.id()?;
    let subject = parse_subject(args.required("subject")?)?;
    let out = args.required("out")?.to_string();
    let sans = args
        .values("san")
        .iter()
        .map(|s| parse_san(s))
        .collect::<Result<Vec<_>, _>>()?;
    let ekus = args
        .values("eku")
        .iter()
        .map(|s| parse_eku(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut conn = Connection::open(&args.socket()?)?;
    let slot = conn.slot(args.slot()?)?;
    let mut session = conn.open_session(slot)?;
    keys::user_login(&mut session, args)?;
    let objects = keys::resolve(&mut session, &label, id.as_deref())?;
    let private = objects
        .iter()
        .find(|o| o.class == CKO_PRIVATE_KEY)
        .ok_or_else(|| CliError::NotFound {
            what: "private key",
            label: label.clone(),
        })?;
    if !private.usage.is_some_and(|u| u.sign) {
        return Err(CliError::Rejected(format!(
            "key \"{label}\" may not sign (its usage excludes it)"
        )));
    }
    let (key_handle, public) = (private.handle, private.public.clone());
    let alg = SigAlg::for_key(&public, args.flag("rsa-pss"))?;
    let signer = CardSigner {
        session: RefCell::new(&mut session),
        key: key_handle,
        alg,
        spki: SpkiDer(public.spki_der()?),
        failure: RefCell::new(None),
    };
    let build_error = |e: x509_cert::builder::Error| CliError::malformed("building the request", e);
    let mut builder = RequestBuilder::new(subject, &signer).map_err(build_error)?;
    // Document and e-mail signing keys also commit to content
    // (nonRepudiation); CAs decide, but a request should say what it is for.
    let commits = ekus.iter().any(|oid| {
        *oid == ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.36")
            || *oid == ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4")
    });
    let usage = if commits {
        KeyUsages::DigitalSignature | KeyUsages::NonRepudiation
    } else {
        KeyUsages::DigitalSignature.into()
    };
    builder
        .add_extension(&KeyUsage(usage))
        .map_err(build_error)?;
    if !ekus.is_empty() {
        builder
            .add_extension(&NonCriticalEku(ExtendedKeyUsage(ekus)))
            .map_err(build_error)?;
    }
    if !sans.is_empty() {
        builder
            .add_extension(&SubjectAltName(sans))
            .map_err(build_error)?;
    }
    let request = match builder.build::<CardSignature>() {
        Ok(r) => r,
        Err(e) => return Err(signer.failure.take().unwrap_or_else(|| build_error(e))),
    };
    let der = request
        .to_der()
        .map_err(|e| CliError::malformed("encoding the request", e))?;
    let checked = verify_request(&der, &public, alg)?;
    std::fs::write(&out, pem_block("CERTIFICATE REQUEST", &der))
        .map_err(|e| CliError::File(out.clone().into(), e))?;
    let subject = checked.info.subject.to_string();
    if args.json() {
        println!(
            "{}",
            serde_json::json!({"out": out, "key": label, "subject": subject, "signature": format!("{alg:?}"), "verified": true})
        );
    } else {
        println!("wrote {out}: request for \"{subject}\" signed on the card by \"{label}\" ({alg:?}), signature verified");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use x509_cert::der::Tagged;

    #[test]
    fn raw_ecdsa_signature_converts_to_der_that_verifies() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        // Many signatures, so that r or s with the high bit set (needing a
        // leading zero) and short values both occur.
        for i in 0..64u8 {
            let msg = [i; 17];
            let raw = pair.sign(&rng, &msg).unwrap();
            let der = ecdsa_raw_to_der(raw.as_ref()).unwrap();
            UnparsedPublicKey::new(&verify::ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref())
                .verify(&msg, &der)
                .unwrap();
        }
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }

    #[test]
    fn algorithm_identifiers_parse() {
        for alg in [
            SigAlg::EcdsaSha256,
            SigAlg::EcdsaSha384,
            SigAlg::EcdsaSha512,
            SigAlg::RsaPkcs1Sha256,
            SigAlg::RsaPssSha256,
        ] {
            let id = alg.identifier().unwrap();
            assert_eq!(id.to_der().unwrap(), alg.identifier_der());
        }
        assert_eq!(
            SigAlg::RsaPssSha256.identifier().unwrap().oid,
            ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10")
        );
    }

    #[test]
    fn subjects_are_encoded_most_general_first_with_rfc5280_string_types() {
        let name = parse_subject("CN=Anna Muster\\, PhD,O=Beispiel AG,C=DE").unwrap();
        assert_eq!(name.0.len(), 3);
        let first = name.0[0].0.iter().next().unwrap();
        assert_eq!(first.oid, ObjectIdentifier::new_unwrap("2.5.4.6"));
        assert_eq!(first.value.tag(), Tag::PrintableString);
        let last = name.0[2].0.iter().next().unwrap();
        assert_eq!(last.value.value(), b"Anna Muster, PhD");
        assert_eq!(last.value.tag(), Tag::Utf8String);
        assert_eq!(name.to_string(), "CN=Anna Muster\\, PhD,O=Beispiel AG,C=DE");
        assert!(parse_subject("O=x").is_err(), "no CN");
        assert!(parse_subject("CN=x,C=DEU").is_err());
        assert!(parse_subject("CN=x,XX=y").is_err());
        assert!(parse_subject("CN=x,C=D_").is_err());
    }

    #[test]
    fn sans_and_ekus() {
        assert!(matches!(
            parse_san("DNS:a.example").unwrap(),
            GeneralName::DnsName(_)
        ));
        assert!(matches!(
            parse_san("email:a@b.example").unwrap(),
            GeneralName::Rfc822Name(_)
        ));
        assert!(parse_san("IP:1.2.3.4").is_err());
        assert!(parse_san("nocolon").is_err());
        assert_eq!(
            parse_eku("document-signing").unwrap(),
            ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.36")
        );
        assert!(parse_eku("server-magic").is_err());
    }
}
