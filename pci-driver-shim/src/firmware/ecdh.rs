//! ECDH key agreement inside the card (CKM_ECDH1_DERIVE): the shared
//! secret of an EC private key and a peer's public point, run through a
//! KDF into the value of a new secret key, which leaves the card only as
//! a blob.
//!
//! The peer's point is validated here whatever the daemon checked: it
//! must be an uncompressed SEC 1 point of exactly the key's curve size and
//! lie on the key's curve (aws-lc checks the curve equation when it
//! decodes the point). The point at infinity has no uncompressed encoding,
//! and the NIST prime curves have cofactor 1, so an on-curve point of the
//! right size is in the prime-order group: invalid-curve and small-subgroup
//! points (opencryptoki CVE-2021-3798) are refused before any
//! multiplication with the private scalar.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::digest;
use zeroize::Zeroizing;

use super::symmetric::{key_len, new_secret};
use super::wrap::Wrapper;
use crate::command::{CardFault, CardResponse, Curve, Hash, Kdf, KeyPolicy, KeySpec};

/// The first byte of an uncompressed SEC 1 point.
const UNCOMPRESSED: u8 = 0x04;

/// What [`derive`] needs besides the wrapper.
pub struct DeriveEcdh<'a> {
    pub blob: &'a [u8],
    pub policy: &'a KeyPolicy,
    pub peer: &'a [u8],
    pub kdf: Kdf,
    pub shared_data: &'a [u8],
    pub derived: &'a KeyPolicy,
}

/// Executes [`CardRequest::DeriveEcdh`](crate::command::CardRequest::DeriveEcdh).
pub fn derive(wrapper: &Wrapper, request: DeriveEcdh<'_>) -> Result<CardResponse, CardFault> {
    let KeySpec::Ec(curve) = request.policy.spec else {
        return Err(CardFault::KeyTypeMismatch);
    };
    // The blob opens only with the policy it was made with, so this flag
    // is the one bound at generation.
    let pkcs8 = wrapper.unwrap(request.blob, &request.policy.to_aad())?;
    if !request.policy.derive {
        return Err(CardFault::NotPermitted);
    }
    if !request.derived.spec.is_secret() {
        return Err(CardFault::BadParameters);
    }
    let len = key_len(request.derived.spec)?;
    if request.kdf == Kdf::Null && !request.shared_data.is_empty() {
        return Err(CardFault::BadParameters);
    }
    check_point(curve, request.peer)?;
    let algorithm = algorithm(curve);
    let private =
        PrivateKey::from_private_key_der(algorithm, &pkcs8).map_err(|_| CardFault::BadBlob)?;
    let peer = UnparsedPublicKey::new(algorithm, request.peer);
    let value = agreement::agree(&private, peer, CardFault::BadInput, |z| {
        kdf(request.kdf, z, request.shared_data, len)
    })?;
    new_secret(wrapper, request.derived, &value)
}

fn algorithm(curve: Curve) -> &'static agreement::Algorithm {
    match curve {
        Curve::P256 => &agreement::ECDH_P256,
        Curve::P384 => &agreement::ECDH_P384,
        Curve::P521 => &agreement::ECDH_P521,
    }
}

/// The encoding checks; the curve equation is aws-lc's, when it parses.
fn check_point(curve: Curve, point: &[u8]) -> Result<(), CardFault> {
    if point.len() == 1 + 2 * curve.scalar_len() && point[0] == UNCOMPRESSED {
        Ok(())
    } else {
        Err(CardFault::BadInput)
    }
}

/// The key value from the shared secret `z`.
fn kdf(
    kdf: Kdf,
    z: &[u8],
    shared_data: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, CardFault> {
    match kdf {
        Kdf::Null => {
            let start = z.len().checked_sub(len).ok_or(CardFault::BadParameters)?;
            Ok(Zeroizing::new(z[start..].to_vec()))
        }
        Kdf::X963(hash) => x963(hash_algorithm(hash)?, z, shared_data, len),
    }
}

fn hash_algorithm(hash: Hash) -> Result<&'static digest::Algorithm, CardFault> {
    match hash {
        Hash::Sha224 => Ok(&digest::SHA224),
        Hash::Sha256 => Ok(&digest::SHA256),
        Hash::Sha384 => Ok(&digest::SHA384),
        Hash::Sha512 => Ok(&digest::SHA512),
        Hash::Sha1 => Err(CardFault::BadParameters),
    }
}

/// ANSI X9.63 KDF: Hash(Z || counter || SharedInfo) for a 32-bit
/// big-endian counter from 1, concatenated and cut to `len`.
fn x963(
    algorithm: &'static digest::Algorithm,
    z: &[u8],
    shared_data: &[u8],
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, CardFault> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + algorithm.output_len()));
    let mut counter: u32 = 1;
    while out.len() < len {
        let mut ctx = digest::Context::new(algorithm);
        ctx.update(z);
        ctx.update(&counter.to_be_bytes());
        ctx.update(shared_data);
        out.extend_from_slice(ctx.finish().as_ref());
        counter = counter.checked_add(1).ok_or(CardFault::BadParameters)?;
    }
    out.truncate(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::SecretUsage;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};

    fn ec_policy(curve: Curve, derive: bool) -> KeyPolicy {
        KeyPolicy {
            object_id: 3,
            spec: KeySpec::Ec(curve),
            sign: false,
            decrypt: false,
            unwrap: false,
            derive,
            sensitive: true,
            extractable: false,
            secret: None,
        }
    }

    fn aes_policy(bytes: u32) -> KeyPolicy {
        KeyPolicy {
            object_id: 4,
            spec: KeySpec::Aes { bytes },
            sign: false,
            decrypt: true,
            unwrap: false,
            derive: false,
            sensitive: true,
            extractable: false,
            secret: Some(SecretUsage {
                encrypt: true,
                verify: false,
                wrap: false,
            }),
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A new EC key pair's blob and public point.
    fn pair(w: &Wrapper, policy: &KeyPolicy) -> (Vec<u8>, Vec<u8>) {
        let KeySpec::Ec(curve) = policy.spec else {
            panic!()
        };
        let key = EcdsaKeyPair::generate(super::super::keys::ecdsa_algorithm(curve)).unwrap();
        let pkcs8 = key.to_pkcs8v1().unwrap();
        let blob = w.wrap(pkcs8.as_ref(), &policy.to_aad()).unwrap();
        (blob, key.public_key().as_ref().to_vec())
    }

    fn run(
        w: &Wrapper,
        blob: &[u8],
        policy: &KeyPolicy,
        peer: &[u8],
        kdf: Kdf,
        derived: &KeyPolicy,
    ) -> Result<Vec<u8>, CardFault> {
        let request = DeriveEcdh {
            blob,
            policy,
            peer,
            kdf,
            shared_data: b"",
            derived,
        };
        match derive(w, request)? {
            CardResponse::SecretKey { blob, .. } => {
                Ok(w.unwrap(&blob, &derived.to_aad()).unwrap().to_vec())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn both_sides_derive_the_same_key_on_every_curve() {
        let w = Wrapper::new(&[5; 32]);
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let policy = ec_policy(curve, true);
            let (a, a_pub) = pair(&w, &policy);
            let (b, b_pub) = pair(&w, &policy);
            for kdf in [Kdf::Null, Kdf::X963(Hash::Sha256), Kdf::X963(Hash::Sha512)] {
                let derived = aes_policy(32);
                let ab = run(&w, &a, &policy, &b_pub, kdf, &derived).unwrap();
                let ba = run(&w, &b, &policy, &a_pub, kdf, &derived).unwrap();
                assert_eq!(ab, ba, "{curve:?} {kdf:?}");
                assert_eq!(ab.len(), 32);
            }
        }
    }

    #[test]
    fn invalid_peer_points_and_permissions_are_refused() {
        let w = Wrapper::new(&[5; 32]);
        let policy = ec_policy(Curve::P256, true);
        let (a, _) = pair(&w, &policy);
        let (_, mut good) = pair(&w, &policy);
        let derived = aes_policy(16);
        let try_peer = |peer: &[u8]| run(&w, &a, &policy, peer, Kdf::Null, &derived);
        assert!(try_peer(&good).is_ok());
        // Off the curve: y changed.
        good[64] ^= 1;
        assert_eq!(try_peer(&good), Err(CardFault::BadInput));
        good[64] ^= 1;
        // The point at infinity, a compressed point, a truncated point, an
        // all-zero "point", and a P-384 point.
        let (_, p384) = pair(&w, &ec_policy(Curve::P384, true));
        for bad in [
            vec![0],
            good[..33].to_vec(),
            good[..64].to_vec(),
            {
                let mut zero = vec![0; 65];
                zero[0] = 4;
                zero
            },
            p384,
        ] {
            assert_eq!(try_peer(&bad), Err(CardFault::BadInput), "{bad:02x?}");
        }
        let no_derive = ec_policy(Curve::P256, false);
        let (c, _) = pair(&w, &no_derive);
        assert_eq!(
            run(&w, &c, &no_derive, &good, Kdf::Null, &derived),
            Err(CardFault::NotPermitted)
        );
        // A blob presented with a loosened policy does not open.
        assert_eq!(
            run(&w, &c, &policy, &good, Kdf::Null, &derived),
            Err(CardFault::BadBlob)
        );
        // CKD_NULL has no shared data, and cannot give more than Z.
        let request = DeriveEcdh {
            blob: &a,
            policy: &policy,
            peer: &good,
            kdf: Kdf::Null,
            shared_data: b"x",
            derived: &derived,
        };
        assert_eq!(derive(&w, request).err(), Some(CardFault::BadParameters));
        let long = KeyPolicy {
            spec: KeySpec::GenericSecret { bytes: 64 },
            ..derived.clone()
        };
        assert_eq!(
            run(&w, &a, &policy, &good, Kdf::Null, &long),
            Err(CardFault::BadParameters)
        );
        assert_eq!(
            run(&w, &a, &policy, &good, Kdf::X963(Hash::Sha1), &derived),
            Err(CardFault::BadParameters)
        );
    }

    #[test]
    fn x963_known_answer_and_counter_layout() {
        // NIST CAVS ANSI X9.63 KDF, SHA-256, 192-bit Z, no SharedInfo,
        // 128-bit output (the vector pyca/cryptography also tests).
        let z = hex("96c05619d56c328ab95fe84b18264b08725b85e33fd34f08");
        let out = x963(&digest::SHA256, &z, b"", 16).unwrap();
        assert_eq!(out.as_slice(), hex("443024c3dae66b95e6f5670601558f71"));
        // Longer than one hash: block i is SHA-256(Z || i || SharedInfo).
        let out = x963(&digest::SHA256, &z, b"info", 40).unwrap();
        let block = |i: u32| {
            let mut data = z.clone();
            data.extend_from_slice(&i.to_be_bytes());
            data.extend_from_slice(b"info");
            digest::digest(&digest::SHA256, &data).as_ref().to_vec()
        };
        let mut want = block(1);
        want.extend_from_slice(&block(2)[..8]);
        assert_eq!(out.as_slice(), want.as_slice());
        assert_eq!(
            kdf(Kdf::Null, &[1, 2, 3, 4], b"", 2).unwrap().as_slice(),
            &[3, 4]
        );
    }
}
