//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`).
//!
//! Each function takes the fuzzer's bytes and drives one decoder or state
//! machine the way a hostile peer could; each must return (or fail an
//! invariant assertion on a real bug), never panic otherwise. They live in
//! the crate because they need its internals; the targets themselves are
//! one-liners.
//!
//! The firmware used here has a fixed master key (see [`firmware`]) so seeds
//! can carry blobs that open, and is in a domain with a fixed domain key, so
//! the domain-bound commands (the TLS CA, export, backup tags) get past the
//! domain check. RSA key generation is skipped, as are the commands that
//! would replace the domain: one 4096-bit generation or one share's
//! passphrase key costs seconds, which would stall the fuzzer, and a new
//! domain would change what later inputs do.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::card::{decode_answer, Shared};
use crate::command::{
    CardRequest, CardResponse, CardResult, Curve, Hash, KeyPolicy, KeySpec, SignScheme,
};
use crate::device::Device;
use crate::error::CardError;
use crate::eventfd::EventLine;
use crate::firmware::Firmware;
use crate::region::SharedRegion;

/// The fixed master key of the fuzzing firmware. Never a real card's.
pub const FIXED_MASTER_KEY: [u8; 32] = [0x42; 32];
/// The fixed domain key of the fuzzing firmware. Never a real domain's.
pub const FIXED_DOMAIN_KEY: [u8; 32] = [0x24; 32];
const FIXED_SERIAL: &[u8; 16] = b"00000000F0225EED";

/// A firmware instance whose master key is [`FIXED_MASTER_KEY`] and domain
/// key [`FIXED_DOMAIN_KEY`], with its state in a per-process temporary
/// directory (in the card's state file formats, `firmware::state_file`).
pub fn firmware() -> &'static Firmware {
    static FIRMWARE: OnceLock<Firmware> = OnceLock::new();
    FIRMWARE.get_or_init(|| {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("mesign-fuzz-card-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzzing card state dir");
        let mut state = b"MSCS\x01".to_vec();
        state.extend_from_slice(&FIXED_MASTER_KEY);
        state.extend_from_slice(FIXED_SERIAL);
        std::fs::write(dir.join("card-state"), state).expect("write the fuzzing card state");
        let mut domain = b"MSCD\x01".to_vec();
        domain.extend_from_slice(&FIXED_DOMAIN_KEY);
        std::fs::write(dir.join("card-domain"), domain).expect("write the fuzzing domain");
        Firmware::start(&dir, false).expect("the fuzzing firmware starts")
    })
}

/// The card's command decoder and dispatcher: any bytes in a data slot.
/// Whatever it answers must itself decode as a `CardResult`.
pub fn card_command(data: &[u8]) {
    match minicbor::decode::<CardRequest>(data) {
        Ok(CardRequest::GenerateKeyPair { policy })
            if matches!(policy.spec, KeySpec::Rsa { .. }) =>
        {
            return
        }
        Ok(
            CardRequest::DomainCreate { replace: true, .. }
            | CardRequest::DomainJoin { replace: true, .. },
        ) => return,
        _ => {}
    }
    let answer = firmware().execute(data);
    minicbor::decode::<CardResult>(&answer).expect("the firmware's answer decodes");
}

/// Key blobs: a policy and a scheme taken from the first bytes, then either
/// the rest as a blob to unwrap and sign with (`data[0]` even), or the rest
/// wrapped as a would-be PKCS#8 key and signed with (odd), which reaches the
/// key parsers. Random blobs must fail as `BadBlob`; nothing may panic.
pub fn wrapped_blob(data: &[u8]) {
    if data.len() < 11 {
        return;
    }
    let (head, rest) = data.split_at(11);
    let policy = KeyPolicy {
        object_id: u64::from_le_bytes(head[1..9].try_into().expect("8 bytes")),
        spec: match head[9] % 8 {
            0 => KeySpec::Ec(Curve::P256),
            1 => KeySpec::Ec(Curve::P384),
            2 => KeySpec::Ec(Curve::P521),
            3 => KeySpec::Rsa { bits: 2048 },
            4 => KeySpec::Rsa { bits: 3072 },
            5 => KeySpec::Rsa { bits: 4096 },
            6 => KeySpec::Rsa { bits: 1024 },
            _ => KeySpec::Rsa { bits: 0 },
        },
        sign: head[10] & 1 != 0,
        decrypt: head[10] & 2 != 0,
        unwrap: head[10] & 4 != 0,
        derive: head[10] & 8 != 0,
        sensitive: head[10] & 16 != 0,
        extractable: head[10] & 32 != 0,
        secret: None,
    };
    let (scheme, input) = scheme_and_input(head[0] >> 1);
    let fw = firmware();
    let blob = if head[0] & 1 == 0 {
        rest.to_vec()
    } else {
        fw.wrap_for_fuzzing(rest, &policy)
    };
    let request = CardRequest::Sign {
        blob,
        policy,
        scheme,
        input,
    };
    let encoded = minicbor::to_vec(&request).expect("encoding into a Vec");
    let answer = fw.execute(&encoded);
    minicbor::decode::<CardResult>(&answer).expect("the firmware's answer decodes");
}

fn scheme_and_input(selector: u8) -> (SignScheme, Vec<u8>) {
    match selector % 5 {
        0 => (SignScheme::Ecdsa, vec![0x11; 32]),
        1 => (SignScheme::RsaPkcs1(Hash::Sha256), vec![0x22; 32]),
        2 => {
            // DigestInfo for SHA-256 followed by the digest.
            let mut di = vec![
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ];
            di.extend_from_slice(&[0x33; 32]);
            (SignScheme::RsaPkcs1DigestInfo, di)
        }
        3 => (
            SignScheme::RsaPss {
                hash: Hash::Sha256,
                mgf_hash: Hash::Sha256,
                salt_len: 32,
            },
            vec![0x44; 32],
        ),
        _ => (SignScheme::Ecdsa, vec![0x55; 66]),
    }
}

/// The host's decoding of what a card wrote into a slot. A result that
/// decodes must survive an encode/decode round trip unchanged.
pub fn card_result(data: &[u8]) {
    if let Ok(result) = minicbor::decode::<CardResult>(data) {
        let again = minicbor::to_vec(&result).expect("encoding into a Vec");
        assert_eq!(
            minicbor::decode::<CardResult>(&again).expect("re-encoded result decodes"),
            result
        );
    }
    match decode_answer(data, 0) {
        Ok(_) | Err(CardError::Fault(_) | CardError::MalformedResponse { slot: 0 }) => {}
        Err(other) => panic!("decode_answer invented an error: {other:?}"),
    }
}

/// The command ring between a host and a hostile card (or the reverse):
/// the bytes are a program of host submissions, honest card answers, raw
/// writes of any word of the region (headers, ring indices and entries,
/// slot lengths), forged completion entries, completion reaping, host
/// timeouts and re-attaching. After every step the host's slot bookkeeping
/// must be consistent.
pub fn card_ring(data: &[u8]) {
    const SLOTS: u32 = 8;
    let card = SharedRegion::create(SLOTS, 4096).expect("create region");
    let host_region =
        SharedRegion::attach(card.fd().try_clone_to_owned().expect("dup")).expect("attach");
    let device = Loopback {
        region: host_region,
        doorbell: EventLine::new().expect("eventfd"),
        interrupt: EventLine::new().expect("eventfd"),
    };
    let host = Shared::new(Box::new(device));
    let mut submitted: Vec<u32> = Vec::new();
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    while let Some(op) = next() {
        match op % 8 {
            0 => {
                let len = usize::from(next().unwrap_or(0));
                let payload = vec![op; len];
                if let Ok(slot) = host.take_slot(Instant::now(), Duration::ZERO) {
                    if host.submit(slot, &payload).is_ok() {
                        submitted.push(slot);
                    }
                }
            }
            1 => {
                if let Ok(Some(slot)) = card.submissions().pop() {
                    if let Ok(request) = card.read_request(slot) {
                        let answer = CardResult::Ok(CardResponse::Bytes(request));
                        let encoded = minicbor::to_vec(&answer).expect("encoding into a Vec");
                        if card.write_response(slot, &encoded).is_ok() {
                            let _ = card.completions().push(slot);
                        }
                    }
                }
            }
            2 => {
                let word = u32::from_le_bytes([
                    next().unwrap_or(0),
                    next().unwrap_or(0),
                    next().unwrap_or(0),
                    next().unwrap_or(0),
                ]);
                let value = u32::from_le_bytes([
                    next().unwrap_or(0),
                    next().unwrap_or(0),
                    next().unwrap_or(0),
                    next().unwrap_or(0),
                ]);
                card.poke_word(word, value);
            }
            3 => {
                let slot = u32::from(next().unwrap_or(0));
                let _ = card.completions().push(slot);
            }
            4 => {
                if host.drain_completions().is_err() {
                    host.mark_gone();
                }
            }
            5 => submitted.retain(|&slot| match host.take_answer(slot) {
                Some(Ok(raw)) => {
                    let _ = decode_answer(&raw, slot);
                    false
                }
                Some(Err(_)) => false,
                None => true,
            }),
            6 => {
                if !submitted.is_empty() {
                    let i = usize::from(next().unwrap_or(0)) % submitted.len();
                    let slot = submitted.swap_remove(i);
                    let _ = host.wait_answer(slot, Instant::now(), Duration::ZERO);
                }
            }
            _ => {
                // A host attaching to whatever the header now says.
                if let Ok(view) = SharedRegion::attach(card.fd().try_clone_to_owned().expect("dup"))
                {
                    assert!(view.slot_count() > 0 && view.slot_capacity() > 0);
                    let _ = view.completions().pending();
                    let _ = view.read_response(u32::from(next().unwrap_or(0)));
                }
            }
        }
        host.assert_consistent();
    }
}

/// A device whose card is the fuzz program.
struct Loopback {
    region: SharedRegion,
    doorbell: EventLine,
    interrupt: EventLine,
}

impl Device for Loopback {
    fn region(&self) -> &SharedRegion {
        &self.region
    }
    fn ring_doorbell(&self) -> Result<(), CardError> {
        self.doorbell.signal()
    }
    fn wait_interrupt(&self, timeout: Duration) -> Result<bool, CardError> {
        self.interrupt.wait(timeout)
    }
    fn describe(&self) -> String {
        "fuzz loopback".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_accept_garbage() {
        let garbage: &[&[u8]] = &[
            &[],
            &[0xff],
            &[0; 64],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        ];
        for data in garbage {
            card_command(data);
            wrapped_blob(data);
            card_result(data);
            card_ring(data);
        }
        // A ring program: submit, answer, reap, collect.
        card_ring(&[0, 5, 1, 4, 5]);
    }

    #[test]
    fn the_fuzzing_card_is_in_its_fixed_domain() {
        let ask = |request: &CardRequest| {
            let encoded = minicbor::to_vec(request).expect("encoding into a Vec");
            minicbor::decode::<CardResult>(&firmware().execute(&encoded)).expect("decodes")
        };
        match ask(&CardRequest::DomainCaPublic) {
            CardResult::Ok(CardResponse::Bytes(point)) => {
                assert_eq!((point.len(), point[0]), (65, 4));
            }
            other => panic!("no domain CA: {other:?}"),
        }
        let create = CardRequest::DomainCreate {
            threshold: 2,
            passphrases: vec![b"passphrase-1".to_vec(), b"passphrase-2".to_vec()],
            replace: false,
        };
        assert_eq!(
            ask(&create),
            CardResult::Err(crate::command::CardFault::DomainExists)
        );
    }
}
