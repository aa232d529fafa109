//! Fault injection for tests of the host stack against a misbehaving card.
//!
//! Off unless the emulator is started with [`FAULTS_ENV`] naming a control
//! file. The emulator reads that file before every command, so a test
//! changes the card's behaviour at run time by rewriting it. One directive a
//! line, `#` starts a comment:
//!
//! ```text
//! drop          execute commands but never post their completions
//! delay 250     post each completion 250 ms late
//! corrupt       post completions whose answer does not decode
//! tamper        the card detects tampering: error state until restart
//! reset         the card resets: the host's session ends, in-flight
//!               commands are lost, and the host must attach again
//! ```
//!
//! `drop`, `delay` and `corrupt` hold while their line is in the file.
//! `tamper` and `reset` fire once when a new file content names them; write
//! a different comment to fire them again.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Names the control file; unset means no fault injection at all.
pub const FAULTS_ENV: &str = "MESIGN_CARD_EMU_FAULTS";

/// Faults that hold while their directive stays in the file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Persistent {
    pub drop_completions: bool,
    pub delay: Option<Duration>,
    pub corrupt_answers: bool,
}

/// Faults that happen once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneShot {
    Tamper,
    Reset,
}

/// What the card should do for the command at hand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub persistent: Persistent,
    pub one_shot: Vec<OneShot>,
}

/// The control file and what was last read from it.
#[derive(Debug)]
pub struct FaultControl {
    path: PathBuf,
    last: Mutex<(String, Persistent)>,
}

impl FaultControl {
    /// The control named by [`FAULTS_ENV`], if any.
    pub fn from_env() -> Option<FaultControl> {
        let path = PathBuf::from(std::env::var_os(FAULTS_ENV)?);
        tracing::warn!(control = %path.display(), "fault injection enabled (test builds only)");
        Some(FaultControl {
            path,
            last: Mutex::new((String::new(), Persistent::default())),
        })
    }

    /// Reads the control file; a missing file means no faults.
    pub fn poll(&self) -> Plan {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if text == last.0 {
            return Plan {
                persistent: last.1,
                one_shot: Vec::new(),
            };
        }
        let plan = parse(&text);
        tracing::warn!(?plan, "fault injection plan changed");
        *last = (text, plan.persistent);
        plan
    }
}

fn parse(text: &str) -> Plan {
    let mut plan = Plan::default();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (None, _) => {}
            (Some("drop"), None) => plan.persistent.drop_completions = true,
            (Some("corrupt"), None) => plan.persistent.corrupt_answers = true,
            (Some("delay"), Some(ms)) if ms.parse::<u64>().is_ok() => {
                plan.persistent.delay = ms.parse().ok().map(Duration::from_millis)
            }
            (Some("tamper"), None) => plan.one_shot.push(OneShot::Tamper),
            (Some("reset"), None) => plan.one_shot.push(OneShot::Reset),
            _ => tracing::warn!(line, "unknown fault directive ignored"),
        }
    }
    plan
}

/// Spoils an encoded answer so the host cannot decode it. Every encoded
/// `CardResult` starts with a two-element array header; flipping its bits
/// turns it into a text-string header, which no `CardResult` decodes from.
pub fn corrupt(answer: &mut [u8]) {
    if let Some(first) = answer.first_mut() {
        *first ^= 0xff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CardResponse, CardResult};

    #[test]
    fn directives_parse_and_one_shots_fire_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults");
        let control = FaultControl {
            path: path.clone(),
            last: Mutex::new((String::new(), Persistent::default())),
        };
        assert_eq!(control.poll(), Plan::default());
        std::fs::write(&path, "drop\ndelay 40 # slow\nnonsense\ntamper\n").unwrap();
        let plan = control.poll();
        assert_eq!(
            plan.persistent,
            Persistent {
                drop_completions: true,
                delay: Some(Duration::from_millis(40)),
                corrupt_answers: false
            }
        );
        assert_eq!(plan.one_shot, vec![OneShot::Tamper]);
        let again = control.poll();
        assert_eq!(again.persistent, plan.persistent);
        assert!(again.one_shot.is_empty(), "a one-shot fault fired twice");
        std::fs::write(&path, "reset # 2\n").unwrap();
        assert_eq!(control.poll().one_shot, vec![OneShot::Reset]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(control.poll(), Plan::default());
    }

    #[test]
    fn corrupted_answers_never_decode() {
        for result in [
            CardResult::Ok(CardResponse::Bytes(vec![1, 2, 3])),
            CardResult::Err(crate::command::CardFault::Internal),
        ] {
            let mut bytes = minicbor::to_vec(&result).unwrap();
            corrupt(&mut bytes);
            assert!(minicbor::decode::<CardResult>(&bytes).is_err());
        }
    }
}
