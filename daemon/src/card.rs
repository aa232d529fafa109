//! The daemon's view of a card: one blocking call per command.
//!
//! The daemon's logic talks to [`CardPort`] rather than to the shim's `Card`
//! directly so that its policy checks can be unit-tested against a scripted
//! card; in production the only implementation is the shim's `Card`
//! (see [`crate::cards`]).

use pci_driver_shim::command::{CardFault, CardInfo, CardRequest, CardResponse};

/// Why a card call failed, as far as the daemon cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardFailure {
    /// The card executed the command and refused it.
    Fault(CardFault),
    /// The card did not answer in time.
    Timeout,
    /// The card (or the emulator process) is gone.
    Gone,
    /// The ring or its transport failed in some other way.
    Transport,
    /// The card answered with a response of the wrong kind.
    UnexpectedResponse,
    /// The card went away and is being brought back; it was not back in
    /// time for this command.
    Recovering,
}

/// A card the daemon can send commands to. Calls block; implementations are
/// shared between connection threads.
pub trait CardPort: Send + Sync {
    /// Executes one command.
    fn call(&self, request: &CardRequest) -> Result<CardResponse, CardFailure>;
    /// Executes several commands, answering each in order; a card that can
    /// take them in one go (the ring: one doorbell) overrides this.
    fn call_batch(&self, requests: &[CardRequest]) -> Vec<Result<CardResponse, CardFailure>> {
        requests.iter().map(|r| self.call(r)).collect()
    }
    /// Identity and health as read when the card was opened.
    fn info(&self) -> CardInfo;
    /// "emulator" or the device path, for the status report.
    fn backend(&self) -> String;
}

#[cfg(any(test, feature = "fuzzing"))]
pub mod fake {
    //! A scripted card for unit tests: it "generates" fixed public keys, and
    //! "signs" by echoing the input, recording every request it sees.

    use std::sync::Mutex;

    use pci_driver_shim::command::{KeySpec, PublicKey};

    use super::*;

    #[derive(Default)]
    pub struct FakeCard {
        pub requests: Mutex<Vec<CardRequest>>,
        pub fail_next: Mutex<Option<CardFailure>>,
    }

    impl CardPort for FakeCard {
        fn call(&self, request: &CardRequest) -> Result<CardResponse, CardFailure> {
            self.requests.lock().unwrap().push(request.clone());
            if let Some(f) = self.fail_next.lock().unwrap().take() {
                return Err(f);
            }
            Ok(match request {
                CardRequest::Info => CardResponse::Info(self.info()),
                CardRequest::GenerateKeyPair { policy } => CardResponse::KeyPair {
                    blob: policy.object_id.to_le_bytes().to_vec(),
                    public: match policy.spec {
                        KeySpec::Rsa { bits } => PublicKey::Rsa {
                            modulus: vec![0xc5; bits as usize / 8],
                            exponent: vec![1, 0, 1],
                        },
                        KeySpec::Ec(curve) => {
                            let mut point = vec![4];
                            point.resize(1 + 2 * curve.scalar_len(), 7);
                            PublicKey::Ec { curve, point }
                        }
                        KeySpec::Ed25519 => PublicKey::Ed25519 { point: vec![7; 32] },
                        // Secret keys are not pairs; the real card refuses.
                        KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => {
                            return Err(CardFailure::Fault(
                                pci_driver_shim::command::CardFault::BadParameters,
                            ))
                        }
                    },
                },
                CardRequest::Sign { input, .. } => CardResponse::Bytes(input.clone()),
                CardRequest::Random { len } => CardResponse::Bytes(vec![0x5a; *len as usize]),
                CardRequest::Decrypt { input, .. } => CardResponse::Bytes(input[..8].to_vec()),
                CardRequest::OaepEncrypt { input, .. } => CardResponse::Bytes(input.clone()),
                CardRequest::GenerateSecret { policy }
                | CardRequest::ImportSecret { policy, .. }
                | CardRequest::DeriveEcdh {
                    derived: policy, ..
                } => CardResponse::SecretKey {
                    blob: policy.object_id.to_le_bytes().to_vec(),
                    check_value: vec![1, 2, 3],
                },
                CardRequest::Cipher { input, .. } => CardResponse::Bytes(input.clone()),
                // The fake card is in no cloning domain.
                CardRequest::DomainInfo => CardResponse::Domain { id: None },
                CardRequest::DomainCreate { .. }
                | CardRequest::DomainJoin { .. }
                | CardRequest::ExportKey { .. }
                | CardRequest::ImportKey { .. }
                | CardRequest::BackupTag { .. }
                | CardRequest::ReplicaTag { .. }
                | CardRequest::DomainCaPublic
                | CardRequest::DomainCaSign { .. } => {
                    return Err(CardFailure::Fault(
                        pci_driver_shim::command::CardFault::NoDomain,
                    ))
                }
                // Wrapping echoes the blob; unwrapping makes a 32-byte key
                // of the requested kind (the fake card holds no keys).
                CardRequest::WrapKey { blob, .. } => CardResponse::Bytes(blob.clone()),
                CardRequest::UnwrapKey { new_policy, .. } => CardResponse::Unwrapped {
                    blob: new_policy.object_id.to_le_bytes().to_vec(),
                    spec: match new_policy.spec {
                        KeySpec::GenericSecret { .. } => KeySpec::GenericSecret { bytes: 32 },
                        _ => KeySpec::Aes { bytes: 32 },
                    },
                    check_value: vec![1, 2, 3],
                    public: None,
                },
                CardRequest::Mac { expected, .. } => match expected {
                    Some(tag) => CardResponse::Verified(tag.iter().all(|&b| b == 0x5a)),
                    None => CardResponse::Bytes(vec![0x5a; 16]),
                },
            })
        }

        fn info(&self) -> CardInfo {
            CardInfo {
                serial: "FAKE0001".into(),
                model: "fake card".into(),
                hardware_version: (1, 0),
                firmware_version: (0, 1),
                operational: true,
                emulated: true,
            }
        }

        fn backend(&self) -> String {
            "fake".into()
        }
    }
}
