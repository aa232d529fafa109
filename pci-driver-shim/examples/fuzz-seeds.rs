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
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use pci_driver_shim::command::{
    CardFault, CardInfo, CardRequest, CardResponse, CardResult, Curve, KeyPolicy, KeySpec,
    PublicKey, SignScheme, MAX_RANDOM,
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
