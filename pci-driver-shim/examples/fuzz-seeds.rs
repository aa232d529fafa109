//! Writes the seed corpora of the card fuzz targets into `fuzz/corpus/`.
//!
//! ```text
//! cargo run -p mesign-pci-driver-shim --features fuzzing --example fuzz-seeds
//! ```
//!
//! Seeds are valid or nearly valid inputs, so the fuzzer starts inside the
//! interesting code rather than at the first decode error. Blobs are made by
//! the fuzzing firmware, whose master key is fixed, so they open during fuzz
//! runs too.

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use pci_driver_shim::command::{
    CardFault, CardInfo, CardRequest, CardResponse, CardResult, Cipher, Curve, Hash, Kdf,
    KeyPolicy, KeySpec, PublicKey, SecretUsage, SignScheme, WrapAlgorithm, WrappingKey, MAX_RANDOM,
};
use pci_driver_shim::fuzzing;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    write_seeds(&corpus.join("card_command"), card_command_seeds());
    write_seeds(&corpus.join("wrapped_blob"), wrapped_blob_seeds());
    write_seeds(&corpus.join("card_result"), card_result_seeds());
    write_seeds(&corpus.join("card_ring"), card_ring_seeds());
}

fn write_seeds(dir: &PathBuf, seeds: Vec<Vec<u8>>) {
    std::fs::create_dir_all(dir).expect("create corpus dir");
    for (n, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{n:02}")), seed).expect("write seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

fn policy(object_id: u64, spec: KeySpec) -> KeyPolicy {
    KeyPolicy {
        object_id,
        spec,
        sign: true,
        decrypt: false,
        unwrap: false,
        derive: false,
        sensitive: true,
        extractable: false,
        secret: None,
    }
}

fn cbor(value: impl minicbor::Encode<()>) -> Vec<u8> {
    minicbor::to_vec(value).expect("encoding into a Vec")
}

/// A blob the fuzzing firmware made for `policy`.
fn blob_for(policy: &KeyPolicy) -> Vec<u8> {
    let answer = fuzzing::firmware().execute(&cbor(CardRequest::GenerateKeyPair {
        policy: policy.clone(),
    }));
    match minicbor::decode::<CardResult>(&answer).expect("answer decodes") {
        CardResult::Ok(CardResponse::KeyPair { blob, .. }) => blob,
        other => panic!("key generation failed: {other:?}"),
    }
}

/// The answer of the fuzzing firmware to `request`, which must succeed.
fn run_ok(request: &CardRequest) -> CardResponse {
    match minicbor::decode::<CardResult>(&fuzzing::firmware().execute(&cbor(request)))
        .expect("answer decodes")
    {
        CardResult::Ok(response) => response,
        CardResult::Err(fault) => panic!("{request:?} failed: {fault:?}"),
    }
}

/// An AES-256 key's policy with the given secret-key usages.
fn aes_policy(object_id: u64, usage: SecretUsage, unwrap: bool, extractable: bool) -> KeyPolicy {
    KeyPolicy {
        unwrap,
        extractable,
        sign: false,
        secret: Some(usage),
        ..policy(object_id, KeySpec::Aes { bytes: 32 })
    }
}

/// A secret key the fuzzing firmware generated for `policy`.
fn secret_blob_for(policy: &KeyPolicy) -> Vec<u8> {
    match run_ok(&CardRequest::GenerateSecret {
        policy: policy.clone(),
    }) {
        CardResponse::SecretKey { blob, .. } => blob,
        other => panic!("secret generation answered {other:?}"),
    }
}

/// Seeds of the commands added with ECDH, key wrapping, the domain CA and
/// multi-part CBC; the first `.1` of them must succeed as they are.
fn new_card_command_seeds() -> (Vec<Vec<u8>>, usize) {
    let ec = KeyPolicy {
        sign: false,
        derive: true,
        ..policy(20, KeySpec::Ec(Curve::P256))
    };
    let ec_blob = blob_for(&ec);
    let peer = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .expect("P-256 key")
        .public_key()
        .as_ref()
        .to_vec();
    let derived = aes_policy(
        21,
        SecretUsage {
            encrypt: true,
            ..SecretUsage::default()
        },
        false,
        false,
    );
    let derive = |peer: Vec<u8>, kdf, shared_data: &[u8]| CardRequest::DeriveEcdh {
        blob: ec_blob.clone(),
        policy: ec.clone(),
        peer,
        kdf,
        shared_data: shared_data.to_vec(),
        derived: derived.clone(),
    };
    let wrapping = aes_policy(
        22,
        SecretUsage {
            wrap: true,
            ..SecretUsage::default()
        },
        true,
        false,
    );
    let wrapping_blob = secret_blob_for(&wrapping);
    let target = KeyPolicy {
        decrypt: true,
        ..aes_policy(
            23,
            SecretUsage {
                encrypt: true,
                ..SecretUsage::default()
            },
            false,
            true,
        )
    };
    let target_blob = secret_blob_for(&target);
    let wrap = |algorithm, wrapping_key| CardRequest::WrapKey {
        algorithm,
        wrapping: wrapping_key,
        blob: target_blob.clone(),
        policy: target.clone(),
    };
    let card_key = WrappingKey::Card {
        blob: wrapping_blob.clone(),
        policy: wrapping.clone(),
    };
    let wrapped = match run_ok(&wrap(WrapAlgorithm::AesKw, card_key.clone())) {
        CardResponse::Bytes(wrapped) => wrapped,
        other => panic!("wrapping answered {other:?}"),
    };
    let unwrap = |algorithm, wrapped: Vec<u8>| CardRequest::UnwrapKey {
        algorithm,
        blob: wrapping_blob.clone(),
        policy: wrapping.clone(),
        wrapped,
        new_policy: aes_policy(24, SecretUsage::default(), false, false),
    };
    let (modulus, exponent) = match run_ok(&CardRequest::GenerateKeyPair {
        policy: policy(25, KeySpec::Rsa { bits: 2048 }),
    }) {
        CardResponse::KeyPair {
            public: PublicKey::Rsa { modulus, exponent },
            ..
        } => (modulus, exponent),
        other => panic!("RSA generation answered {other:?}"),
    };
    let cbc = |encrypt, input: Vec<u8>| CardRequest::Cipher {
        blob: target_blob.clone(),
        policy: target.clone(),
        cipher: Cipher::AesCbcBlocks { iv: vec![0x17; 16] },
        encrypt,
        input,
    };
    let oaep = WrapAlgorithm::RsaOaep {
        hash: Hash::Sha256,
        mgf_hash: Hash::Sha256,
        label: b"label".to_vec(),
    };
    let ok = vec![
        derive(peer.clone(), Kdf::Null, b""),
        derive(peer.clone(), Kdf::X963(Hash::Sha256), b"shared info"),
        wrap(WrapAlgorithm::AesKw, card_key.clone()),
        wrap(WrapAlgorithm::AesKwp, card_key.clone()),
        wrap(
            oaep.clone(),
            WrappingKey::RsaPublic {
                modulus: modulus.clone(),
                exponent: exponent.clone(),
            },
        ),
        unwrap(WrapAlgorithm::AesKw, wrapped.clone()),
        CardRequest::DomainCaPublic,
        CardRequest::DomainCaSign {
            tbs: vec![0x30, 3, 2, 1, 1],
        },
        cbc(true, vec![0x61; 32]),
        cbc(false, vec![0x62; 48]),
    ];
    let ok_count = ok.len();
    for request in &ok {
        run_ok(request);
    }
    let mut off_curve = peer.clone();
    off_curve[64] ^= 1;
    let refused = vec![
        derive(off_curve, Kdf::Null, b""),
        derive(peer[..33].to_vec(), Kdf::X963(Hash::Sha512), b""),
        unwrap(WrapAlgorithm::AesKwp, wrapped.clone()),
        unwrap(WrapAlgorithm::AesKw, wrapped[..wrapped.len() - 8].to_vec()),
        wrap(
            oaep,
            WrappingKey::RsaPublic {
                modulus: modulus[..64].to_vec(),
                exponent,
            },
        ),
        cbc(true, vec![0x63; 15]),
        CardRequest::DomainCreate {
            threshold: 2,
            passphrases: vec![b"passphrase-1".to_vec(), b"passphrase-2".to_vec()],
            replace: false,
        },
    ];
    let seeds = ok.iter().chain(&refused).map(cbor).collect();
    (seeds, ok_count)
}

fn card_command_seeds() -> Vec<Vec<u8>> {
    let ec = policy(7, KeySpec::Ec(Curve::P256));
    let blob = blob_for(&ec);
    let sign = |policy: &KeyPolicy, scheme, input: Vec<u8>| {
        cbor(CardRequest::Sign {
            blob: blob.clone(),
            policy: policy.clone(),
            scheme,
            input,
        })
    };
    let mut edited = ec.clone();
    edited.extractable = true;
    vec![
        cbor(CardRequest::Info),
        cbor(CardRequest::Random { len: 32 }),
        cbor(CardRequest::Random {
            len: MAX_RANDOM + 1,
        }),
        cbor(CardRequest::GenerateKeyPair { policy: ec.clone() }),
        cbor(CardRequest::GenerateKeyPair {
            policy: policy(8, KeySpec::Ec(Curve::P384)),
        }),
        sign(&ec, SignScheme::Ecdsa, vec![0xab; 32]),
        sign(&ec, SignScheme::Ecdsa, vec![0xab; 80]),
        sign(&edited, SignScheme::Ecdsa, vec![0xab; 32]),
        sign(
            &ec,
            SignScheme::RsaPkcs1(pci_driver_shim::command::Hash::Sha256),
            vec![1; 32],
        ),
        vec![0xff, 0x00, 0x13],
    ]
    .into_iter()
    .chain(new_card_command_seeds().0)
    .collect()
}

/// `[scheme << 1 | mode][object id LE][spec][flags][blob or PKCS#8]`, the
/// layout `fuzzing::wrapped_blob` reads.
fn wrapped_blob_seed(mode_and_scheme: u8, object_id: u64, spec: u8, rest: &[u8]) -> Vec<u8> {
    let mut seed = vec![mode_and_scheme];
    seed.extend_from_slice(&object_id.to_le_bytes());
    seed.push(spec);
    seed.push(1 | 16); // sign, sensitive
    seed.extend_from_slice(rest);
    seed
}

fn wrapped_blob_seeds() -> Vec<Vec<u8>> {
    let ec_blob = blob_for(&policy(9, KeySpec::Ec(Curve::P256)));
    let ec_pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .expect("P-256 key")
        .to_pkcs8v1()
        .expect("PKCS#8")
        .as_ref()
        .to_vec();
    let rsa_pkcs8 = RsaKeyPair::generate(KeySize::Rsa2048)
        .expect("RSA key")
        .as_der()
        .expect("PKCS#8")
        .as_ref()
        .to_vec();
    let mut truncated = ec_blob.clone();
    truncated.truncate(20);
    vec![
        // A blob that opens, signed with ECDSA.
        wrapped_blob_seed(0, 9, 0, &ec_blob),
        // The same blob under another object id: must not open.
        wrapped_blob_seed(0, 10, 0, &ec_blob),
        wrapped_blob_seed(0, 9, 0, &truncated),
        // PKCS#8 keys wrapped on the fly: ECDSA, RSA PKCS#1, RSA PSS.
        wrapped_blob_seed(1, 11, 0, &ec_pkcs8),
        wrapped_blob_seed(3, 12, 3, &rsa_pkcs8),
        wrapped_blob_seed(7, 12, 3, &rsa_pkcs8),
        // A key whose type disagrees with its policy.
        wrapped_blob_seed(1, 13, 3, &ec_pkcs8),
    ]
}

fn card_result_seeds() -> Vec<Vec<u8>> {
    let info = CardInfo {
        serial: "00000000F0225EED".into(),
        model: "fuzz".into(),
        hardware_version: (1, 0),
        firmware_version: (0, 1),
        operational: true,
        emulated: true,
    };
    vec![
        cbor(CardResult::Ok(CardResponse::Info(info))),
        cbor(CardResult::Ok(CardResponse::KeyPair {
            blob: vec![1; 60],
            public: PublicKey::Ec {
                curve: Curve::P256,
                point: vec![4; 65],
            },
        })),
        cbor(CardResult::Ok(CardResponse::KeyPair {
            blob: vec![1; 60],
            public: PublicKey::Rsa {
                modulus: vec![0xc5; 256],
                exponent: vec![1, 0, 1],
            },
        })),
        cbor(CardResult::Ok(CardResponse::Bytes(vec![9; 64]))),
        cbor(CardResult::Err(CardFault::SelfTestFailed)),
        cbor(CardResult::Err(CardFault::BadBlob)),
    ]
}

fn card_ring_seeds() -> Vec<Vec<u8>> {
    vec![
        // submit, card answers, reap, collect
        vec![0, 5, 1, 4, 5],
        // fill every slot, answer all, reap, collect
        [[0u8, 9].repeat(9), vec![1; 9], vec![4, 5]].concat(),
        // a forged completion for an idle slot and one out of range
        vec![3, 0, 3, 200, 4, 5],
        // the host gives up, the answer comes late, the slot is reused
        vec![0, 3, 6, 0, 1, 4, 5, 0, 3, 1, 4, 5],
        // the card corrupts the completion ring's tail
        vec![0, 1, 2, 80, 0, 0, 0, 0xff, 0, 0, 0, 4, 5],
        // the header's magic overwritten, then a host attaches
        vec![2, 0, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 7, 0],
    ]
}
