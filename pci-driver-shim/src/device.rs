//! The one trait every card backend implements.
//!
//! A backend provides what a PCI function provides: a shared memory region
//! holding the command rings and data slots, a doorbell the host writes to
//! announce submissions, and an interrupt the card raises after posting
//! completions. The emulator backend passes a memfd and two eventfds over a
//! Unix socket; a real-device backend would mmap a BAR or VFIO region and
//! take the eventfds from the kernel driver. [`crate::Card`] is the same code
//! above either.

use std::time::Duration;

use crate::error::CardError;
use crate::region::SharedRegion;

/// A card as the host sees it.
pub trait Device: Send + Sync {
    /// The command region shared with the card.
    fn region(&self) -> &SharedRegion;

    /// Tells the card that new submission entries are waiting.
    fn ring_doorbell(&self) -> Result<(), CardError>;

    /// Blocks until the card raises its completion interrupt (`Ok(true)`),
    /// the timeout passes (`Ok(false)`), or the card is found dead
    /// (`Err(CardError::Gone)`). Spurious wake-ups are allowed: the caller
    /// always re-checks the completion ring.
    fn wait_interrupt(&self, timeout: Duration) -> Result<bool, CardError>;

    /// Fails with [`CardError::Gone`] when the card is known to be dead,
    /// without waiting; the host's watchdog asks this of an idle card.
    fn check_alive(&self) -> Result<(), CardError> {
        Ok(())
    }

    /// A human-readable description for logs and `mesign-hsm` output.
    fn describe(&self) -> String;

    /// Attaches to the same card afresh, after a reset or a restart of its
    /// process; backends that cannot answer [`CardError::Gone`].
    fn reconnect(&self) -> Result<Box<dyn Device>, CardError> {
        Err(CardError::Gone)
    }
}
