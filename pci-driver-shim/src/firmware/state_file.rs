//! The card's persistent secret: master key and serial, in
//! `<state_dir>/card-state`.
//!
//! A real card keeps these in battery-backed, tamper-responsive memory; the
//! emulator keeps them in a file that only its owner may read. The file is
//! created atomically (temporary file with mode 0600, fsync, rename, fsync
//! of the directory), so a crash during first start never leaves a
//! half-written master key that would orphan every blob.
//!
//! Format: `MSCS`, one version byte, 32 key bytes, 16 ASCII hex digits of
//! serial. The cloning-domain key, once the card has one, lives beside it
//! in `card-domain` (see [`load_domain`]).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::FirmwareError;

const FILE_NAME: &str = "card-state";
const MAGIC: &[u8; 4] = b"MSCS";
const VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const SERIAL_LEN: usize = 16;
const FILE_LEN: usize = MAGIC.len() + 1 + KEY_LEN + SERIAL_LEN;
const DOMAIN_FILE_NAME: &str = "card-domain";
const DOMAIN_MAGIC: &[u8; 4] = b"MSCD";
const DOMAIN_FILE_LEN: usize = DOMAIN_MAGIC.len() + 1 + KEY_LEN;

/// The loaded state.
pub struct CardState {
    pub master_key: Zeroizing<[u8; KEY_LEN]>,
    pub serial: String,
}

/// Loads the state, creating it on first start.
pub fn load_or_create(state_dir: &Path) -> Result<CardState, FirmwareError> {
    fs::create_dir_all(state_dir).map_err(io_error(state_dir))?;
    let path = state_dir.join(FILE_NAME);
    match File::open(&path) {
        Ok(file) => read(&path, file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(state_dir, &path),
        Err(e) => Err(FirmwareError::Io { path, source: e }),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FirmwareError + '_ {
    move |source| FirmwareError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path, mut file: File) -> Result<CardState, FirmwareError> {
    let mode = file
        .metadata()
        .map_err(io_error(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "card state file is accessible to other users");
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(FILE_LEN));
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    let corrupt = || FirmwareError::CorruptState {
        path: path.to_path_buf(),
    };
    if bytes.len() != FILE_LEN || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(corrupt());
    }
    let mut master_key = Zeroizing::new([0u8; KEY_LEN]);
    master_key.copy_from_slice(&bytes[5..5 + KEY_LEN]);
    let serial = &bytes[5 + KEY_LEN..];
    if !serial.iter().all(u8::is_ascii_hexdigit) {
        return Err(corrupt());
    }
    let serial = String::from_utf8(serial.to_vec()).map_err(|_| corrupt())?;
    Ok(CardState { master_key, serial })
}

fn create(state_dir: &Path, path: &Path) -> Result<CardState, FirmwareError> {
    let mut master_key = Zeroizing::new([0u8; KEY_LEN]);
    let mut serial_bytes = [0u8; SERIAL_LEN / 2];
    aws_lc_rs::rand::fill(&mut master_key[..]).map_err(|_| FirmwareError::Random)?;
    aws_lc_rs::rand::fill(&mut serial_bytes).map_err(|_| FirmwareError::Random)?;
    let serial: String = serial_bytes.iter().map(|b| format!("{b:02X}")).collect();

    let mut contents = Zeroizing::new(Vec::with_capacity(FILE_LEN));
    contents.extend_from_slice(MAGIC);
    contents.push(VERSION);
    contents.extend_from_slice(&master_key[..]);
    contents.extend_from_slice(serial.as_bytes());

    write_atomically(state_dir, path, &contents)?;
    tracing::info!(%serial, "created a new card master key");
    Ok(CardState { master_key, serial })
}

/// Writes `contents` to `path` (in `state_dir`) so that a crash leaves
/// either the old file or the complete new one: a temporary file with mode
/// 0600, fsync, rename, fsync of the directory.
fn write_atomically(state_dir: &Path, path: &Path, contents: &[u8]) -> Result<(), FirmwareError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = state_dir.join(tmp_name);
    // A leftover from a crash during an earlier write holds nothing that
    // was ever acknowledged.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(FirmwareError::Io {
                path: tmp,
                source: e,
            })
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))?;
    File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error(state_dir))
}

/// The cloning-domain key, in `<state_dir>/card-domain` beside the master
/// key (a file of its own, so that joining a domain never rewrites the
/// master key). Format: `MSCD`, one version byte, 32 key bytes. `None`
/// when the card is in no domain.
pub fn load_domain(state_dir: &Path) -> Result<Option<Zeroizing<[u8; KEY_LEN]>>, FirmwareError> {
    let path = state_dir.join(DOMAIN_FILE_NAME);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FirmwareError::Io { path, source: e }),
    };
    let mut bytes = Zeroizing::new(Vec::with_capacity(DOMAIN_FILE_LEN));
    file.read_to_end(&mut bytes).map_err(io_error(&path))?;
    if bytes.len() != DOMAIN_FILE_LEN || &bytes[..4] != DOMAIN_MAGIC || bytes[4] != VERSION {
        return Err(FirmwareError::CorruptState { path });
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes[5..]);
    Ok(Some(key))
}

/// Installs `key` as the card's domain key, replacing any earlier one,
/// crash-safely.
pub fn store_domain(state_dir: &Path, key: &[u8; KEY_LEN]) -> Result<(), FirmwareError> {
    let mut contents = Zeroizing::new(Vec::with_capacity(DOMAIN_FILE_LEN));
    contents.extend_from_slice(DOMAIN_MAGIC);
    contents.push(VERSION);
    contents.extend_from_slice(key);
    write_atomically(state_dir, &state_dir.join(DOMAIN_FILE_NAME), &contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.serial.len(), SERIAL_LEN);
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(*first.master_key, *second.master_key);
        assert_eq!(first.serial, second.serial);
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
    }

    #[test]
    fn corrupt_state_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(FILE_LEN - 1);
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(FirmwareError::CorruptState { .. })
        ));
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "a corrupt state must not be overwritten"
        );
    }
    #[test]
    fn domain_key_is_stored_beside_the_master_key_and_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let state = load_or_create(dir.path()).unwrap();
        assert!(load_domain(dir.path()).unwrap().is_none());
        store_domain(dir.path(), &[3; KEY_LEN]).unwrap();
        assert_eq!(*load_domain(dir.path()).unwrap().unwrap(), [3; KEY_LEN]);
        store_domain(dir.path(), &[4; KEY_LEN]).unwrap();
        assert_eq!(*load_domain(dir.path()).unwrap().unwrap(), [4; KEY_LEN]);
        let mode = fs::metadata(dir.path().join(DOMAIN_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("card-domain.tmp").exists());
        // The master key file is untouched and still loads.
        assert_eq!(
            *load_or_create(dir.path()).unwrap().master_key,
            *state.master_key
        );
        fs::write(dir.path().join(DOMAIN_FILE_NAME), b"MSCD\x01short").unwrap();
        assert!(matches!(
            load_domain(dir.path()),
            Err(FirmwareError::CorruptState { .. })
        ));
    }
}
