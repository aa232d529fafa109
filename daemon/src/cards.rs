//! Opening the configured cards through the card layer, and the adapter
//! that lets the daemon's logic call them as [`CardPort`]s.

use std::path::Path;
use std::sync::Arc;

use pci_driver_shim::command::{CardInfo, CardRequest, CardResponse};
use pci_driver_shim::{Card, CardError, EmulatorProcess};

use crate::card::{CardFailure, CardPort};
use crate::config::CardConfig;

struct ShimCard {
    card: Card,
    backend: String,
}

impl CardPort for ShimCard {
    fn call(&self, request: &CardRequest) -> Result<CardResponse, CardFailure> {
        self.card.call(request).map_err(|e| {
            tracing::warn!(error = %e, backend = %self.backend, "card call failed");
            failure(e)
        })
    }

    fn info(&self) -> CardInfo {
        self.card.info().clone()
    }

    fn backend(&self) -> String {
        self.backend.clone()
    }
}

/// What the daemon needs to know about a card-layer error.
fn failure(e: CardError) -> CardFailure {
    match e {
        CardError::Fault(fault) => CardFailure::Fault(fault),
        CardError::Timeout { .. } => CardFailure::Timeout,
        CardError::Gone => CardFailure::Gone,
        CardError::UnexpectedResponse => CardFailure::UnexpectedResponse,
        CardError::Region(_)
        | CardError::RequestTooLarge { .. }
        | CardError::MalformedResponse { .. }
        | CardError::Os { .. }
        | CardError::Connect { .. }
        | CardError::Busy { .. }
        | CardError::BadHandshake { .. }
        | CardError::Spawn { .. }
        | CardError::EmulatorExited { .. }
        | CardError::NotReady { .. } => CardFailure::Transport,
    }
}

/// An opened card and, for a spawned emulator, its process (dropping it
/// stops the emulator).
pub struct OpenedCard {
    pub port: Arc<dyn CardPort>,
    pub process: Option<EmulatorProcess>,
}

/// Opens card number `index` as configured; `state_dir` is the daemon's.
pub fn open_card(
    index: usize,
    config: &CardConfig,
    state_dir: &Path,
) -> Result<OpenedCard, CardError> {
    match config {
        CardConfig::Emulator {
            socket: Some(socket),
            ..
        } => {
            let device = pci_driver_shim::connect_emulator(socket)?;
            let card = Card::open(device)?;
            let backend = format!("emulator at {}", socket.display());
            Ok(OpenedCard {
                port: Arc::new(ShimCard { card, backend }),
                process: None,
            })
        }
        CardConfig::Emulator {
            state_dir: card_dir,
            socket: None,
            exe,
        } => {
            let dir = card_dir
                .clone()
                .unwrap_or_else(|| state_dir.join(format!("card{index}")));
            let exe = exe.clone().unwrap_or_else(pci_driver_shim::emulator_exe);
            let (process, device) = pci_driver_shim::spawn_emulator(&exe, &dir)?;
            let card = Card::open(device)?;
            let port = Arc::new(ShimCard {
                card,
                backend: "emulator".into(),
            });
            Ok(OpenedCard {
                port,
                process: Some(process),
            })
        }
    }
}
