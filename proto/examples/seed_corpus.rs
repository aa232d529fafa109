//! Writes a seed corpus for the wire fuzz targets: one valid frame per kind
//! of request and reply. Run from the workspace root:
//! `cargo run -p mesign-proto --example seed_corpus`.

use std::fs;
use std::path::Path;

use mesign_proto::*;

fn main() -> std::io::Result<()> {
    let requests = [
        RequestBody::Hello { app: 42 },
        RequestBody::Slots,
        RequestBody::TokenInfo { slot: 0 },
        RequestBody::Login {
            session: 1,
            user_type: 1,
            pin: b"123456".to_vec(),
        },
        RequestBody::GetAttributes {
            session: 1,
            object: 2,
            types: vec![0, 3, 0x11],
        },
        RequestBody::FindObjects {
            session: 1,
            template: vec![Attribute {
                ty: 3,
                value: b"label".to_vec(),
            }],
        },
        RequestBody::GenerateKeyPair {
            session: 1,
            mechanism: 0x1040,
            public_template: vec![Attribute {
                ty: 0x180,
                value: vec![6, 8, 42, 134, 72, 206, 61, 3, 1, 7],
            }],
            private_template: vec![Attribute {
                ty: 0x108,
                value: vec![1],
            }],
        },
        RequestBody::Sign {
            session: 1,
            key: 2,
            mechanism: 0x1044,
            scheme: SignScheme::Ecdsa,
            input: vec![7; 32],
        },
        RequestBody::Sign {
            session: 1,
            key: 2,
            mechanism: 0x43,
            scheme: SignScheme::RsaPss {
                hash: HashAlg::Sha256,
                mgf_hash: HashAlg::Sha256,
                salt_len: 32,
            },
            input: vec![9; 32],
        },
        RequestBody::DeriveKey {
            session: 1,
            mechanism: 0x1050,
            base: 2,
            params: EcdhParams {
                kdf: 6,
                shared_data: b"info".to_vec(),
                public_data: [&[4u8][..], &[0x11; 64]].concat(),
            },
            template: vec![Attribute {
                ty: 0x161,
                value: 32u64.to_le_bytes().to_vec(),
            }],
        },
        RequestBody::WrapKey {
            session: 1,
            mechanism: WrapMechanism::RsaOaep {
                hash: HashAlg::Sha256,
                mgf_hash: HashAlg::Sha1,
                label: b"label".to_vec(),
            },
            wrapping: 3,
            key: 4,
        },
        RequestBody::UnwrapKey {
            session: 1,
            mechanism: WrapMechanism::AesKeyWrapPad,
            unwrapping: 3,
            wrapped: vec![0xa6; 40],
            template: vec![Attribute {
                ty: 0x4000_0212,
                value: attr::attribute_array_value(&[Attribute {
                    ty: 0x103,
                    value: vec![1],
                }]),
            }],
        },
        RequestBody::DomainCaPublic { slot: 0 },
        RequestBody::DomainCaSign {
            session: 1,
            tbs: vec![0x30, 3, 2, 1, 1],
        },
        RequestBody::ReplicaVersions { slot: 0 },
        RequestBody::ReplicaApply {
            slot: 0,
            change: Box::new(ReplicaChange {
                version: ReplicaVersion {
                    unique_id: "0123456789abcdef".into(),
                    version: 3,
                    digest: vec![0; 32],
                    deleted: true,
                },
                object: None,
                tag: vec![0; 32],
            }),
        },
    ];
    let replies = [
        ReplyResult::Ok(ReplyBody::Done),
        ReplyResult::Err(0xa0),
        ReplyResult::Ok(ReplyBody::Objects(vec![1, 2, 3])),
        ReplyResult::Ok(ReplyBody::Attributes(vec![
            AttributeValue::Value(vec![1]),
            AttributeValue::Sensitive,
            AttributeValue::Invalid,
        ])),
        ReplyResult::Ok(ReplyBody::Bytes(vec![0x30; 64])),
    ];
    let mut frame = Vec::new();
    let dir = Path::new("fuzz/corpus/wire_request");
    fs::create_dir_all(dir)?;
    for (i, body) in requests.into_iter().enumerate() {
        encode_frame(
            &Request {
                version: PROTOCOL_VERSION,
                id: i as u64,
                body,
            },
            &mut frame,
        );
        fs::write(dir.join(format!("seed-{i:02}")), &frame)?;
    }
    let dir = Path::new("fuzz/corpus/wire_reply");
    fs::create_dir_all(dir)?;
    for (i, result) in replies.into_iter().enumerate() {
        encode_frame(
            &Reply {
                id: i as u64,
                result,
            },
            &mut frame,
        );
        fs::write(dir.join(format!("seed-{i:02}")), &frame[4..])?;
    }
    Ok(())
}
