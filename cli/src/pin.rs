//! Where PINs come from: a file (`--pin-file`, first line), an environment
//! variable (`MESIGN_HSM_PIN`, for scripts), or a prompt on the terminal with
//! echo off. A file wins over the variable, the variable over the prompt.
//! PINs are held in zeroizing buffers.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sys::termios::{self, LocalFlags, SetArg};
use zeroize::Zeroizing;

use crate::args::Args;
use crate::error::CliError;

/// A PIN, wiped from memory when dropped.
pub type Pin = Zeroizing<Vec<u8>>;

/// Which PIN a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinKind {
    /// The user PIN (`--pin-file`, `MESIGN_HSM_PIN`).
    User,
    /// The security officer's PIN (`--so-pin-file`, `MESIGN_HSM_SO_PIN`).
    So,
    /// A PIN being set (`--new-pin-file`, `MESIGN_HSM_NEW_PIN`); the prompt
    /// asks twice.
    New,
}

impl PinKind {
    fn option(self) -> &'static str {
        match self {
            PinKind::User => "pin-file",
            PinKind::So => "so-pin-file",
            PinKind::New => "new-pin-file",
        }
    }

    fn variable(self) -> &'static str {
        match self {
            PinKind::User => "MESIGN_HSM_PIN",
            PinKind::So => "MESIGN_HSM_SO_PIN",
            PinKind::New => "MESIGN_HSM_NEW_PIN",
        }
    }

    fn name(self) -> &'static str {
        match self {
            PinKind::User => "PIN",
            PinKind::So => "SO PIN",
            PinKind::New => "new PIN",
        }
    }
}

/// The PIN of `kind` from the file, the variable, or the prompt `prompt`.
/// A prompt for a PIN being set (`confirm`) asks twice.
pub fn read_pin(args: &Args, kind: PinKind, prompt: &str, confirm: bool) -> Result<Pin, CliError> {
    if let Some(pin) = non_interactive(args, kind)? {
        return Ok(pin);
    }
    let pin = prompt_pin(prompt).map_err(|_| CliError::NoPin(kind.name()))?;
    if confirm {
        let again = prompt_pin("Repeat it: ").map_err(|_| CliError::NoPin(kind.name()))?;
        if *again != *pin {
            return Err(CliError::Rejected("the two PINs differ".into()));
        }
    }
    Ok(pin)
}

/// The PIN of `kind` from a file or the environment, if either gives one.
pub fn non_interactive(args: &Args, kind: PinKind) -> Result<Option<Pin>, CliError> {
    if let Some(path) = args.value(kind.option())? {
        return pin_from_file(Path::new(path)).map(Some);
    }
    match std::env::var_os(kind.variable()) {
        Some(v) if !v.is_empty() => Ok(Some(Zeroizing::new(v.into_encoded_bytes()))),
        _ => Ok(None),
    }
}

/// The first line of `path` as a secret (a custodian's passphrase file).
pub fn secret_from_file(path: &Path) -> Result<Pin, CliError> {
    pin_from_file(path)
}

/// A secret read from the terminal with echo off (a custodian's
/// passphrase).
pub fn prompt_secret(prompt: &str) -> std::io::Result<Pin> {
    prompt_pin(prompt)
}

/// The first line of `path`, without its line ending.
fn pin_from_file(path: &Path) -> Result<Pin, CliError> {
    let file = File::open(path).map_err(|e| CliError::File(path.to_path_buf(), e))?;
    let mut line = Zeroizing::new(Vec::new());
    BufReader::new(file)
        .read_until(b'\n', &mut line)
        .map_err(|e| CliError::File(path.to_path_buf(), e))?;
    let len = trimmed_len(&line);
    line.truncate(len);
    if line.is_empty() {
        return Err(CliError::File(
            PathBuf::from(path),
            std::io::Error::new(std::io::ErrorKind::InvalidData, "the first line is empty"),
        ));
    }
    Ok(line)
}

fn trimmed_len(line: &[u8]) -> usize {
    let mut len = line.len();
    while len > 0 && matches!(line[len - 1], b'\n' | b'\r') {
        len -= 1;
    }
    len
}

/// Reads one line from the controlling terminal with echo off, restoring
/// the terminal's settings afterwards (also when reading fails).
fn prompt_pin(prompt: &str) -> std::io::Result<Pin> {
    let tty = File::options().read(true).write(true).open("/dev/tty")?;
    let saved = termios::tcgetattr(tty.as_fd())?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    (&tty).write_all(prompt.as_bytes())?;
    termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &quiet)?;
    let mut line = Zeroizing::new(Vec::new());
    let read = BufReader::new(&tty).read_until(b'\n', &mut line);
    termios::tcsetattr(tty.as_fd(), SetArg::TCSAFLUSH, &saved)?;
    read?;
    let len = trimmed_len(&line);
    line.truncate(len);
    Ok(line)
}

/// Asks a yes/no question on the terminal; `Err` when there is none.
pub fn confirm(question: &str) -> std::io::Result<bool> {
    let tty = File::options().read(true).write(true).open("/dev/tty")?;
    (&tty).write_all(question.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&tty).read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_gives_its_first_line() {
        let dir = std::env::temp_dir().join(format!("mesign-pin-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pin");
        std::fs::write(&path, "123456\r\nsecond line\n").unwrap();
        let args =
            Args::parse(["list", "--pin-file", path.to_str().unwrap()].map(String::from)).unwrap();
        let pin = non_interactive(&args, PinKind::User).unwrap().unwrap();
        assert_eq!(&pin[..], b"123456");
        // The SO PIN is not taken from the user's file.
        assert!(
            non_interactive(&args, PinKind::So).unwrap().is_none()
                || std::env::var_os("MESIGN_HSM_SO_PIN").is_some()
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            non_interactive(&args, PinKind::User),
            Err(CliError::File(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_is_an_error() {
        let args =
            Args::parse(["list", "--pin-file", "/nonexistent/pin"].map(String::from)).unwrap();
        assert!(matches!(
            non_interactive(&args, PinKind::User),
            Err(CliError::File(..))
        ));
    }
}
