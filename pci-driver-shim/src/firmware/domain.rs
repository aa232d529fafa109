//! The cloning domain: one 256-bit key shared by the cards that may move
//! key blobs between them, and the backup commands built on it.
//!
//! The domain key is made on one card and reaches another only as k-of-n
//! Shamir shares (GF(256), `vsss-rs`: constant time, audited), each sealed
//! under its custodian's passphrase; the clear key exists only inside
//! cards. From it the card derives (HMAC-SHA256 with distinct labels, so
//! no derived key reveals another or the domain key):
//!
//! - the domain id, a public fingerprint (16 bytes) by which shares,
//!   backups and cards name their domain;
//! - the wrap key for backed-up key blobs (AES-256-GCM, the key's policy
//!   and a digest of all its attributes as associated data);
//! - the MAC key that makes a backup file tamper-evident;
//! - the domain's TLS certificate authority: a P-256 key (HKDF-SHA256 from
//!   the domain key with a fixed label, so every card of the domain holds
//!   the same CA and no card ever exports it) that signs the certificates
//!   boxes and signing servers present to each other.
//!
//! The key lives in `<state dir>/card-domain` (see `state_file`), read
//! afresh by every command that needs it, so the emulator instances of one
//! slot, which share a state directory, always agree on it.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aws_lc_rs::aead::NONCE_LEN;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::signature::KeyPair;
use aws_lc_rs::{agreement, constant_time, hkdf, hmac, pbkdf2, rand, signature};
use vsss_rs::{Gf256, IdentifierGf256};
use zeroize::Zeroizing;

use super::keys;
use super::state_file;
use super::wrap::Wrapper;
use crate::command::{
    CardFault, CardRequest, CardResponse, DomainShare, KeyPolicy, Passphrase, ShareInput,
    MAX_DOMAIN_SHARES, MIN_PASSPHRASE_LEN,
};

/// PBKDF2-HMAC-SHA512 iterations for a share's passphrase key. Higher than
/// the PIN records' 210,000 (OWASP's figure for SHA-512): a share file may
/// be attacked offline for as long as the domain lives, and is opened
/// rarely, so half a second per share costs nothing.
pub const SHARE_ITERATIONS: u32 = 600_000;

const KEY_LEN: usize = 32;
const ID_LEN: usize = 16;
const SALT_LEN: usize = 16;
const SHARE_AAD_LABEL: &[u8] = b"MeSign domain share v1";
const EXPORT_AAD_LABEL: &[u8] = b"MeSign backup key v1";
const BACKUP_TAG_LABEL: &[u8] = b"MeSign backup v1";
const REPLICA_TAG_LABEL: &[u8] = b"MeSign replica change v1";
const TLS_CA_SALT: &[u8] = b"MeSign domain TLS CA v1";
/// The most bytes a certificate's to-be-signed part may have.
const MAX_TBS: usize = 16 * 1024;

/// A domain key, with the keys derived from it.
pub struct DomainKey {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl DomainKey {
    fn new(key: Zeroizing<[u8; KEY_LEN]>) -> DomainKey {
        DomainKey { key }
    }

    fn derive(&self, label: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &self.key[..]), label);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// The public fingerprint that names the domain.
    pub fn id(&self) -> Vec<u8> {
        self.derive(b"MeSign domain id v1")[..ID_LEN].to_vec()
    }

    fn wrapper(&self) -> Wrapper {
        Wrapper::new(&self.derive(b"MeSign domain wrap key v1"))
    }

    /// The domain's TLS CA key: HKDF-SHA256 of the domain key gives a
    /// candidate P-256 scalar; the rare candidate that is not a valid
    /// scalar (zero or not below the group order) is skipped by counter,
    /// so the result is the same on every card.
    fn tls_ca(&self) -> Result<signature::EcdsaKeyPair, CardFault> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, TLS_CA_SALT).extract(&self.key[..]);
        for counter in 0u8..=255 {
            let info = [b"p256 scalar".as_slice(), &[counter]];
            let mut scalar = Zeroizing::new([0u8; 32]);
            prk.expand(&info, hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut scalar[..]))
                .map_err(|_| CardFault::Internal)?;
            let Ok(private) =
                agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &scalar[..])
            else {
                continue;
            };
            let public = private
                .compute_public_key()
                .map_err(|_| CardFault::Internal)?;
            return signature::EcdsaKeyPair::from_private_key_and_public_key(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &scalar[..],
                public.as_ref(),
            )
            .map_err(|_| CardFault::Internal);
        }
        Err(CardFault::Internal)
    }

    fn backup_tag(&self, digest: &[u8]) -> hmac::Tag {
        self.tag(b"MeSign backup mac key v1", BACKUP_TAG_LABEL, digest)
    }

    fn replica_tag(&self, digest: &[u8]) -> hmac::Tag {
        self.tag(b"MeSign replica mac key v1", REPLICA_TAG_LABEL, digest)
    }

    fn tag(&self, key_label: &[u8], label: &[u8], digest: &[u8]) -> hmac::Tag {
        let key = self.derive(key_label);
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &key[..]));
        ctx.update(label);
        ctx.update(digest);
        ctx.sign()
    }
}

/// The card's domain state: where it is kept, and a lock so that two
/// creates or joins on this card do not interleave.
pub struct Domains {
    state_dir: PathBuf,
    iterations: u32,
    changing: Mutex<()>,
}

impl Domains {
    pub fn new(state_dir: &Path) -> Domains {
        Domains {
            state_dir: state_dir.to_path_buf(),
            iterations: SHARE_ITERATIONS,
            changing: Mutex::new(()),
        }
    }

    /// The installed domain key, if any.
    fn current(&self) -> Result<Option<DomainKey>, CardFault> {
        match state_file::load_domain(&self.state_dir) {
            Ok(key) => Ok(key.map(DomainKey::new)),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the domain key");
                Err(CardFault::Internal)
            }
        }
    }

    fn required(&self) -> Result<DomainKey, CardFault> {
        self.current()?.ok_or(CardFault::NoDomain)
    }

    fn install(&self, key: &DomainKey) -> Result<(), CardFault> {
        state_file::store_domain(&self.state_dir, &key.key).map_err(|e| {
            tracing::error!(error = %e, "cannot store the domain key");
            CardFault::Internal
        })
    }

    fn check_replace(&self, replace: bool) -> Result<(), CardFault> {
        if !replace && self.current()?.is_some() {
            return Err(CardFault::DomainExists);
        }
        Ok(())
    }

    /// A new domain key, installed, and its shares.
    fn create(
        &self,
        threshold: u8,
        passphrases: &[Passphrase],
        replace: bool,
    ) -> Result<Vec<DomainShare>, CardFault> {
        let count = u8::try_from(passphrases.len()).map_err(|_| CardFault::BadInput)?;
        if threshold < 2 || count < threshold || count > MAX_DOMAIN_SHARES {
            return Err(CardFault::BadInput);
        }
        if passphrases.iter().any(|p| p.len() < MIN_PASSPHRASE_LEN) {
            return Err(CardFault::BadInput);
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        self.check_replace(replace)?;
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        aws_lc_rs::rand::fill(&mut key[..]).map_err(|_| CardFault::Internal)?;
        let domain = DomainKey::new(key);
        let id = domain.id();
        let mut rng = CardRng::default();
        let points = vsss_rs::Gf256::split_bytes_with_participant_ids_iter(
            usize::from(threshold),
            usize::from(count),
            &domain.key[..],
            &mut rng,
            (1..=count).map(|x| IdentifierGf256(Gf256(x))),
        )
        .map_err(|_| CardFault::Internal)?;
        let points: Vec<Zeroizing<Vec<u8>>> = points.into_iter().map(Zeroizing::new).collect();
        if rng.failed {
            return Err(CardFault::Internal);
        }
        let shares = points
            .iter()
            .zip(passphrases)
            .map(|(point, passphrase)| {
                seal_share(&id, threshold, count, self.iterations, point, passphrase)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.install(&domain)?;
        tracing::info!(domain = %hex(&id), threshold, shares = count, "created a cloning domain");
        Ok(shares)
    }

    /// Opens the shares, rebuilds the key, checks it against the domain
    /// id the shares carry, installs it; returns the domain id.
    fn join(&self, inputs: &[ShareInput], replace: bool) -> Result<Vec<u8>, CardFault> {
        let first = &inputs.first().ok_or(CardFault::BadInput)?.share;
        let same_domain = inputs.iter().all(|i| {
            i.share.domain_id == first.domain_id
                && i.share.threshold == first.threshold
                && i.share.shares == first.shares
        });
        let mut indices: Vec<u8> = inputs.iter().map(|i| i.share.index).collect();
        indices.sort_unstable();
        indices.dedup();
        if !same_domain
            || first.threshold < 2
            || indices.len() != inputs.len()
            || inputs.len() < usize::from(first.threshold)
        {
            return Err(CardFault::BadInput);
        }
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        self.check_replace(replace)?;
        let points = inputs
            .iter()
            .map(|i| open_share(&i.share, &i.passphrase))
            .collect::<Result<Vec<_>, _>>()?;
        let plain: Vec<Vec<u8>> = points.iter().map(|p| p.to_vec()).collect();
        let combined = Gf256::combine_bytes(&plain);
        for mut p in plain {
            zeroize::Zeroize::zeroize(&mut p);
        }
        let combined = Zeroizing::new(combined.map_err(|_| CardFault::BadInput)?);
        if combined.len() != KEY_LEN {
            return Err(CardFault::BadInput);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&combined);
        let domain = DomainKey::new(key);
        // Shares that all open but rebuild another key (fewer than the
        // real threshold, or a corrupt card made them) are refused here.
        if domain.id() != first.domain_id {
            return Err(CardFault::BadInput);
        }
        self.install(&domain)?;
        tracing::info!(domain = %hex(&first.domain_id), "joined a cloning domain");
        Ok(first.domain_id.clone())
    }
}

/// Executes a domain or backup command.
pub fn execute(
    domains: &Domains,
    master: &Wrapper,
    request: CardRequest,
) -> Result<CardResponse, CardFault> {
    match request {
        CardRequest::DomainCreate {
            threshold,
            mut passphrases,
            replace,
        } => {
            let created = domains.create(threshold, &passphrases, replace);
            passphrases.iter_mut().for_each(zeroize::Zeroize::zeroize);
            created.map(CardResponse::DomainShares)
        }
        CardRequest::DomainJoin {
            mut shares,
            replace,
        } => {
            let joined = domains.join(&shares, replace);
            for share in &mut shares {
                zeroize::Zeroize::zeroize(&mut share.passphrase);
            }
            joined.map(|id| CardResponse::Domain { id: Some(id) })
        }
        CardRequest::DomainInfo => Ok(CardResponse::Domain {
            id: domains.current()?.map(|d| d.id()),
        }),
        CardRequest::ExportKey {
            blob,
            policy,
            binding,
        } => {
            let domain = domains.required()?;
            let key = master.unwrap(&blob, &policy.to_aad())?;
            check_loads(&policy, &key)?;
            domain
                .wrapper()
                .wrap(&key, &export_aad(&policy, &binding))
                .map(CardResponse::Bytes)
        }
        CardRequest::ImportKey {
            domain_blob,
            policy,
            binding,
            object_id,
        } => {
            let domain = domains.required()?;
            let key = domain
                .wrapper()
                .unwrap(&domain_blob, &export_aad(&policy, &binding))?;
            check_loads(&policy, &key)?;
            // The card, not the daemon, builds the new policy: only the
            // object id may change on the way between cards.
            let moved = KeyPolicy {
                object_id,
                ..policy
            };
            master.wrap(&key, &moved.to_aad()).map(CardResponse::Bytes)
        }
        CardRequest::BackupTag { digest, expected } => {
            if digest.len() != 32 {
                return Err(CardFault::BadInput);
            }
            Ok(tag_answer(
                domains.required()?.backup_tag(&digest),
                expected,
            ))
        }
        CardRequest::ReplicaTag { digest, expected } => {
            if digest.len() != 32 {
                return Err(CardFault::BadInput);
            }
            Ok(tag_answer(
                domains.required()?.replica_tag(&digest),
                expected,
            ))
        }
        CardRequest::DomainCaPublic => {
            let ca = domains.required()?.tls_ca()?;
            Ok(CardResponse::Bytes(ca.public_key().as_ref().to_vec()))
        }
        CardRequest::DomainCaSign { tbs } => {
            if tbs.is_empty() || tbs.len() > MAX_TBS {
                return Err(CardFault::BadInput);
            }
            let ca = domains.required()?.tls_ca()?;
            ca.sign(&rand::SystemRandom::new(), &tbs)
                .map(|s| CardResponse::Bytes(s.as_ref().to_vec()))
                .map_err(|_| CardFault::Internal)
        }
        _ => Err(CardFault::Malformed),
    }
}

/// A key pair's PKCS#8 must parse as the policy's kind before it is
/// rewrapped (a secret key's blob holds its raw value: nothing to parse).
fn check_loads(policy: &KeyPolicy, key: &[u8]) -> Result<(), CardFault> {
    if policy.spec.is_secret() {
        return Ok(());
    }
    keys::load(policy.spec, key).map(|_| ())
}

fn export_aad(policy: &KeyPolicy, binding: &[u8]) -> Vec<u8> {
    let mut aad = EXPORT_AAD_LABEL.to_vec();
    aad.extend_from_slice(&(binding.len() as u32).to_be_bytes());
    aad.extend_from_slice(binding);
    aad.extend_from_slice(&policy.to_aad());
    aad
}

fn share_aad(id: &[u8], index: u8, threshold: u8, count: u8, iterations: u32) -> Vec<u8> {
    let mut aad = SHARE_AAD_LABEL.to_vec();
    aad.extend_from_slice(&(id.len() as u32).to_be_bytes());
    aad.extend_from_slice(id);
    aad.extend_from_slice(&[index, threshold, count]);
    aad.extend_from_slice(&iterations.to_be_bytes());
    aad
}

fn passphrase_key(
    passphrase: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<LessSafeKey, CardFault> {
    let iterations = std::num::NonZeroU32::new(iterations).ok_or(CardFault::BadInput)?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        salt,
        passphrase,
        &mut key[..],
    );
    let key = UnboundKey::new(&AES_256_GCM, &key[..]).map_err(|_| CardFault::Internal)?;
    Ok(LessSafeKey::new(key))
}

fn seal_share(
    id: &[u8],
    threshold: u8,
    count: u8,
    iterations: u32,
    point: &[u8],
    passphrase: &[u8],
) -> Result<DomainShare, CardFault> {
    let index = point[0];
    let mut salt = vec![0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| CardFault::Internal)?;
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CardFault::Internal)?;
    let key = passphrase_key(passphrase, &salt, iterations)?;
    let mut sealed = point.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(share_aad(id, index, threshold, count, iterations)),
        &mut sealed,
    )
    .map_err(|_| CardFault::Internal)?;
    Ok(DomainShare {
        domain_id: id.to_vec(),
        index,
        threshold,
        shares: count,
        iterations,
        salt,
        nonce: nonce.to_vec(),
        sealed,
    })
}

/// The Shamir point inside `share`; [`CardFault::ShareRefused`] when it
/// does not open (wrong passphrase, or any field changed).
fn open_share(share: &DomainShare, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, CardFault> {
    // A share claiming a low count would make guessing its passphrase
    // cheap; the card never makes one.
    if share.iterations < SHARE_ITERATIONS_FLOOR || share.salt.len() != SALT_LEN {
        return Err(CardFault::ShareRefused);
    }
    let nonce =
        Nonce::try_assume_unique_for_key(&share.nonce).map_err(|_| CardFault::ShareRefused)?;
    let key = passphrase_key(passphrase, &share.salt, share.iterations)?;
    let mut body = Zeroizing::new(share.sealed.clone());
    let aad = share_aad(
        &share.domain_id,
        share.index,
        share.threshold,
        share.shares,
        share.iterations,
    );
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| CardFault::ShareRefused)?
        .len();
    body.truncate(len);
    if body.len() != 1 + KEY_LEN || body[0] != share.index {
        return Err(CardFault::ShareRefused);
    }
    Ok(body)
}

/// The lowest iteration count a share may claim: the production count in
/// the product, lower only in this module's unit tests.
#[cfg(not(test))]
const SHARE_ITERATIONS_FLOOR: u32 = SHARE_ITERATIONS;
/// A tag, or with `expected`, whether it equals that (in constant time).
fn tag_answer(tag: hmac::Tag, expected: Option<Vec<u8>>) -> CardResponse {
    match expected {
        None => CardResponse::Bytes(tag.as_ref().to_vec()),
        Some(expected) => CardResponse::Verified(
            constant_time::verify_slices_are_equal(tag.as_ref(), &expected).is_ok(),
        ),
    }
}

#[cfg(test)]
const SHARE_ITERATIONS_FLOOR: u32 = 1_000;

/// aws-lc-rs's DRBG as the `rand_core` generator `vsss-rs` draws its
/// polynomial coefficients from. Its failure cannot be reported through
/// the trait, so it is remembered and checked after the split.
#[derive(Default)]
struct CardRng {
    failed: bool,
}

impl CardRng {
    fn fill(&mut self, dst: &mut [u8]) {
        if aws_lc_rs::rand::fill(dst).is_err() {
            self.failed = true;
        }
    }
}

impl rand_core::TryRng for CardRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for CardRng {}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Curve, KeySpec};

    const FAST: u32 = 1_000;

    fn domains(dir: &Path) -> Domains {
        Domains {
            iterations: FAST,
            ..Domains::new(dir)
        }
    }

    fn passphrases(n: usize) -> Vec<Passphrase> {
        (0..n)
            .map(|i| format!("custodian-{i}-passphrase").into_bytes())
            .collect()
    }

    fn inputs(shares: &[DomainShare], which: &[usize]) -> Vec<ShareInput> {
        let words = passphrases(shares.len());
        which
            .iter()
            .map(|&i| ShareInput {
                share: shares[i].clone(),
                passphrase: words[i].clone(),
            })
            .collect()
    }

    fn id_of(d: &Domains) -> Option<Vec<u8>> {
        d.current().unwrap().map(|k| k.id())
    }

    #[test]
    fn any_threshold_of_shares_rebuilds_the_key_and_nothing_less_installs() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (da, db) = (domains(a.path()), domains(b.path()));
        let shares = da.create(2, &passphrases(3), false).unwrap();
        let id = id_of(&da).unwrap();
        assert_eq!(shares.len(), 3);
        assert!(shares
            .iter()
            .all(|s| s.domain_id == id && s.threshold == 2 && s.shares == 3));
        assert_eq!(
            shares.iter().map(|s| s.index).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // One share alone: refused before anything is opened.
        assert_eq!(
            db.join(&inputs(&shares, &[0]), false),
            Err(CardFault::BadInput)
        );
        // The same share twice is not two shares.
        let mut twice = inputs(&shares, &[0]);
        twice.push(twice[0].clone());
        assert_eq!(db.join(&twice, false), Err(CardFault::BadInput));
        // A wrong passphrase.
        let mut wrong = inputs(&shares, &[0, 2]);
        wrong[1].passphrase = b"not the passphrase".to_vec();
        assert_eq!(db.join(&wrong, false), Err(CardFault::ShareRefused));
        assert_eq!(id_of(&db), None, "nothing installed");
        for pair in [[0, 1], [1, 2], [2, 0]] {
            let dir = tempfile::tempdir().unwrap();
            let d = domains(dir.path());
            assert_eq!(d.join(&inputs(&shares, &pair), false).unwrap(), id);
            assert_eq!(
                *d.current().unwrap().unwrap().key,
                *da.required().unwrap().key
            );
        }
        // All three work as well as two.
        assert_eq!(db.join(&inputs(&shares, &[0, 1, 2]), false).unwrap(), id);
    }

    #[test]
    fn every_field_of_a_share_is_bound() {
        let dir = tempfile::tempdir().unwrap();
        let shares = domains(dir.path())
            .create(2, &passphrases(2), false)
            .unwrap();
        let good = inputs(&shares, &[0])[0].clone();
        assert!(open_share(&good.share, &good.passphrase).is_ok());
        let tamperings: Vec<fn(&mut DomainShare)> = vec![
            |s| s.domain_id[0] ^= 1,
            |s| s.index = 2,
            |s| s.threshold = 3,
            |s| s.shares = 4,
            |s| s.iterations += 1,
            |s| s.salt[3] ^= 1,
            |s| s.nonce[0] ^= 1,
            |s| s.sealed[5] ^= 1,
            |s| s.iterations = 10,
        ];
        for (i, tamper) in tamperings.iter().enumerate() {
            let mut share = good.share.clone();
            tamper(&mut share);
            assert_eq!(
                open_share(&share, &good.passphrase).unwrap_err(),
                CardFault::ShareRefused,
                "tampering {i}"
            );
        }
    }

    #[test]
    fn shares_of_two_domains_do_not_mix_and_replace_is_explicit() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (da, db) = (domains(a.path()), domains(b.path()));
        let sa = da.create(2, &passphrases(2), false).unwrap();
        let sb = db.create(2, &passphrases(2), false).unwrap();
        assert_ne!(id_of(&da), id_of(&db));
        let mut mixed = inputs(&sa, &[0]);
        mixed.extend(inputs(&sb, &[1]));
        let c = tempfile::tempdir().unwrap();
        let dc = domains(c.path());
        assert_eq!(dc.join(&mixed, false), Err(CardFault::BadInput));
        // In a domain already: create and join need replace.
        assert_eq!(
            da.create(2, &passphrases(2), false).unwrap_err(),
            CardFault::DomainExists
        );
        assert_eq!(
            da.join(&inputs(&sb, &[0, 1]), false),
            Err(CardFault::DomainExists)
        );
        assert_eq!(
            da.join(&inputs(&sb, &[0, 1]), true).unwrap(),
            id_of(&db).unwrap()
        );
        // Parameters the card refuses.
        assert_eq!(
            dc.create(1, &passphrases(2), false),
            Err(CardFault::BadInput)
        );
        assert_eq!(
            dc.create(3, &passphrases(2), false),
            Err(CardFault::BadInput)
        );
        assert_eq!(
            dc.create(2, &[b"short".to_vec(), b"long enough".to_vec()], false),
            Err(CardFault::BadInput)
        );
        assert_eq!(id_of(&dc), None);
    }

    #[test]
    fn keys_move_between_cards_of_a_domain_only_with_their_policy_and_binding() {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (da, db, dc) = (domains(a.path()), domains(b.path()), domains(c.path()));
        let shares = da.create(2, &passphrases(2), false).unwrap();
        db.join(&inputs(&shares, &[0, 1]), false).unwrap();
        dc.create(2, &passphrases(2), false).unwrap();
        let (ma, mb) = (Wrapper::new(&[1; 32]), Wrapper::new(&[2; 32]));
        let policy = KeyPolicy {
            object_id: 5,
            spec: KeySpec::Ec(Curve::P256),
            sign: true,
            decrypt: false,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            secret: None,
        };
        let generated = keys::generate(policy.spec).unwrap();
        let blob = ma.wrap(&generated.pkcs8, &policy.to_aad()).unwrap();
        let binding = vec![9; 32];
        let Ok(CardResponse::Bytes(moved)) = execute(
            &da,
            &ma,
            CardRequest::ExportKey {
                blob: blob.clone(),
                policy: policy.clone(),
                binding: binding.clone(),
            },
        ) else {
            panic!("export failed")
        };
        assert!(!moved
            .windows(16)
            .any(|w| generated.pkcs8.windows(16).any(|p| p == w)));
        let import = |d: &Domains, policy: &KeyPolicy, binding: &[u8]| {
            execute(
                d,
                &mb,
                CardRequest::ImportKey {
                    domain_blob: moved.clone(),
                    policy: policy.clone(),
                    binding: binding.to_vec(),
                    object_id: 77,
                },
            )
        };
        let Ok(CardResponse::Bytes(restored)) = import(&db, &policy, &binding) else {
            panic!("import failed")
        };
        let new_policy = KeyPolicy {
            object_id: 77,
            ..policy.clone()
        };
        assert_eq!(
            &mb.unwrap(&restored, &new_policy.to_aad()).unwrap()[..],
            &generated.pkcs8[..]
        );
        // Another domain, another binding, another policy: refused.
        assert_eq!(import(&dc, &policy, &binding), Err(CardFault::BadBlob));
        assert_eq!(import(&db, &policy, &[8; 32]), Err(CardFault::BadBlob));
        let laxer = KeyPolicy {
            extractable: true,
            ..policy.clone()
        };
        assert_eq!(import(&db, &laxer, &binding), Err(CardFault::BadBlob));
        // A card in no domain exports nothing.
        let none = tempfile::tempdir().unwrap();
        assert_eq!(
            execute(
                &domains(none.path()),
                &ma,
                CardRequest::ExportKey {
                    blob,
                    policy,
                    binding
                }
            ),
            Err(CardFault::NoDomain)
        );
    }

    #[test]
    fn the_tls_ca_is_the_same_on_every_card_of_a_domain_and_signs() {
        use p256::ecdsa::signature::Verifier;
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let d: Vec<Domains> = dirs.iter().map(|t| domains(t.path())).collect();
        let master = Wrapper::new(&[1; 32]);
        let run = |d: &Domains, r: CardRequest| match execute(d, &master, r) {
            Ok(CardResponse::Bytes(b)) => Ok(b),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            run(&d[0], CardRequest::DomainCaPublic),
            Err(CardFault::NoDomain)
        );
        let shares = d[0].create(2, &passphrases(3), false).unwrap();
        d[1].join(&inputs(&shares, &[0, 2]), false).unwrap();
        d[2].create(2, &passphrases(2), false).unwrap();
        let public = run(&d[0], CardRequest::DomainCaPublic).unwrap();
        assert_eq!(public.len(), 65);
        assert_eq!(run(&d[1], CardRequest::DomainCaPublic).unwrap(), public);
        assert_ne!(run(&d[2], CardRequest::DomainCaPublic).unwrap(), public);
        let tbs = b"to be signed".to_vec();
        let der = run(&d[1], CardRequest::DomainCaSign { tbs: tbs.clone() }).unwrap();
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public).unwrap();
        let sig = p256::ecdsa::Signature::from_der(&der).unwrap();
        key.verify(&tbs, &sig).unwrap();
        assert_eq!(
            run(&d[0], CardRequest::DomainCaSign { tbs: Vec::new() }),
            Err(CardFault::BadInput)
        );
    }

    #[test]
    fn backup_tags_verify_only_in_their_domain() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (da, db) = (domains(a.path()), domains(b.path()));
        da.create(2, &passphrases(2), false).unwrap();
        db.create(2, &passphrases(2), false).unwrap();
        let master = Wrapper::new(&[1; 32]);
        let tag = |d: &Domains, expected: Option<Vec<u8>>| {
            execute(
                d,
                &master,
                CardRequest::BackupTag {
                    digest: vec![7; 32],
                    expected,
                },
            )
            .unwrap()
        };
        let CardResponse::Bytes(t) = tag(&da, None) else {
            panic!("no tag")
        };
        assert_eq!(tag(&da, Some(t.clone())), CardResponse::Verified(true));
        assert_eq!(tag(&db, Some(t.clone())), CardResponse::Verified(false));
        let mut bad = t;
        bad[0] ^= 1;
        assert_eq!(tag(&da, Some(bad)), CardResponse::Verified(false));
    }

    #[test]
    fn replica_tags_are_not_backup_tags() {
        let dir = tempfile::tempdir().unwrap();
        let d = domains(dir.path());
        d.create(2, &passphrases(2), false).unwrap();
        let master = Wrapper::new(&[1; 32]);
        let run = |request| execute(&d, &master, request).unwrap();
        let CardResponse::Bytes(backup) = run(CardRequest::BackupTag {
            digest: vec![7; 32],
            expected: None,
        }) else {
            panic!("no tag")
        };
        let CardResponse::Bytes(replica) = run(CardRequest::ReplicaTag {
            digest: vec![7; 32],
            expected: None,
        }) else {
            panic!("no tag")
        };
        assert_ne!(backup, replica);
        let verify = |tag: &Vec<u8>| {
            run(CardRequest::ReplicaTag {
                digest: vec![7; 32],
                expected: Some(tag.clone()),
            })
        };
        assert_eq!(verify(&replica), CardResponse::Verified(true));
        assert_eq!(verify(&backup), CardResponse::Verified(false));
    }

    #[test]
    fn production_shares_use_the_full_iteration_count() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Domains::new(dir.path()).iterations, SHARE_ITERATIONS);
        const { assert!(SHARE_ITERATIONS >= 600_000) };
    }
}
