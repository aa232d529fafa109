//! The module under test, its token and the process-wide fixtures behind it.
//!
//! Each integration test file is its own process. Per process there is at
//! most one loaded copy of each module (a PKCS#11 library is initialized once
//! per process), one temporary directory holding SoftHSM's configuration and
//! token store and our daemon's state, and (for ours) one daemon. Environment
//! variables are process-wide and read by the modules, so both are set once,
//! before either module is loaded.
//!
//! SoftHSM gives every `Target::ready` its own freshly initialized token. Ours
//! has one token per card, so all `ready` targets of a process share one
//! token that stays logged in; cases must use unique labels and never log
//! out. Cases that need a blank token or control of the login state live in
//! their own test file.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use crate::binaries;
use crate::cleanup;
use crate::daemon::Daemon;
use crate::divergence::Divergence;
use crate::ffi::RawModule;

/// The Security Officer PIN every token in the suite gets.
pub const SO_PIN: &str = "12345678";
/// The user PIN every token in the suite gets.
pub const USER_PIN: &str = "123456";
/// Label of our shared token.
pub const MESIGN_TOKEN_LABEL: &str = "mesign-suite";

/// Which module a target loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// libmesign_pkcs11.so with its daemon and card emulator.
    Mesign,
    /// SoftHSMv2 from the Debian package.
    SoftHsm,
}

impl Kind {
    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mesign => "mesign",
            Kind::SoftHsm => "softhsm",
        }
    }
}

/// A loaded, initialized module.
pub struct Library {
    /// The `cryptoki` context.
    pub pkcs11: Pkcs11,
    /// Raw access to the same module.
    pub raw: RawModule,
    /// Where it was loaded from.
    pub path: PathBuf,
}

impl Library {
    fn load(path: &Path) -> Self {
        let pkcs11 =
            Pkcs11::new(path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
        initialize(&pkcs11);
        let raw = RawModule::open(path);
        Self {
            pkcs11,
            raw,
            path: path.to_path_buf(),
        }
    }
}

fn initialize(pkcs11: &Pkcs11) {
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
}

/// The per-process scratch directory; also sets the modules' environment.
fn process_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("softhsm-tests-")
            .tempdir()
            .expect("create process temp dir")
            .keep();
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).expect("create SoftHSM token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        // Set before either module is loaded and before any test thread can
        // call into one, which is what makes the process-wide write sound.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var("MESIGN_HSM_SOCKET", mesign_socket_in(&dir));
        let remove = dir.clone();
        cleanup::at_exit(move || {
            let _ = std::fs::remove_dir_all(remove);
        });
        dir
    })
}

fn mesign_socket_in(dir: &Path) -> PathBuf {
    dir.join("hsmd.sock")
}

/// Everything our half of a process shares.
struct MesignProcess {
    library: Library,
    daemon: Mutex<Option<Daemon>>,
    /// A logged-in session held open for the whole process: login state is
    /// per application and ends when its last session closes, so without it
    /// parallel cases would race each other's C_CloseSession.
    keeper: Mutex<Option<Session>>,
}

impl MesignProcess {
    fn start_daemon() -> Daemon {
        let dir = process_dir();
        Daemon::start(
            &dir.join("hsmd-state"),
            &mesign_socket_in(dir),
            &dir.join("hsmd.log"),
        )
    }
}

fn mesign() -> &'static MesignProcess {
    static PROCESS: OnceLock<MesignProcess> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let daemon = MesignProcess::start_daemon();
        cleanup::at_exit(|| {
            if let Some(process) = PROCESS.get() {
                let daemon = process
                    .daemon
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                drop(daemon);
            }
        });
        let library = Library::load(&binaries::require(binaries::MESIGN_MODULE));
        MesignProcess {
            library,
            daemon: Mutex::new(Some(daemon)),
            keeper: Mutex::new(None),
        }
    })
}

fn softhsm() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        process_dir();
        Library::load(Path::new(binaries::SOFTHSM_MODULE))
    })
}

/// Serialises "find SoftHSM's free slot, initialize a token there": SoftHSM
/// offers exactly one free slot at a time.
static SOFTHSM_FREE_SLOT: Mutex<()> = Mutex::new(());

/// A PIN as cryptoki wants it.
pub fn pin(text: &str) -> AuthPin {
    AuthPin::from(text)
}

/// The module under test plus one token in it.
pub struct Target {
    kind: Kind,
    slot: Cell<Slot>,
    token_label: RefCell<Option<String>>,
    free_slot: RefCell<Option<MutexGuard<'static, ()>>>,
}

impl Target {
    /// A token that is initialized, has a user PIN, and whose sessions come
    /// back logged in as the user from `user_session`.
    pub fn ready(kind: Kind) -> Self {
        match kind {
            Kind::Mesign => {
                static READY: Once = Once::new();
                let target = Self::blank_or_existing(kind);
                READY.call_once(|| {
                    if !target.token_info_initialized() {
                        target.init_token(MESIGN_TOKEN_LABEL);
                        target.init_user_pin();
                    } else {
                        *target.token_label.borrow_mut() = Some(target.current_label());
                    }
                    let keeper = target.session();
                    login_user(&keeper);
                    *mesign().keeper.lock().unwrap() = Some(keeper);
                });
                *target.token_label.borrow_mut() = Some(target.current_label());
                target
            }
            Kind::SoftHsm => {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let target = Self::blank(kind);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                target.init_token(&format!("suite-{n}"));
                target.init_user_pin();
                target
            }
        }
    }

    /// A token that is not initialized yet. For ours this is the process's
    /// only card, so at most one case per process may ask for it.
    pub fn blank(kind: Kind) -> Self {
        let target = Self::blank_or_existing(kind);
        assert!(
            !target.token_info_initialized(),
            "{}: the token is already initialized; blank targets need their own test file",
            kind.name()
        );
        target
    }

    fn blank_or_existing(kind: Kind) -> Self {
        match kind {
            Kind::Mesign => {
                let slots = mesign()
                    .library
                    .pkcs11
                    .get_slots_with_token()
                    .expect("C_GetSlotList");
                let slot = *slots.first().expect("our module shows a slot with a token");
                Self {
                    kind,
                    slot: Cell::new(slot),
                    token_label: RefCell::new(None),
                    free_slot: RefCell::new(None),
                }
            }
            Kind::SoftHsm => {
                let guard = SOFTHSM_FREE_SLOT.lock().unwrap_or_else(|p| p.into_inner());
                let pkcs11 = &softhsm().pkcs11;
                let slot = pkcs11
                    .get_slots_with_token()
                    .expect("C_GetSlotList")
                    .into_iter()
                    .find(|s| {
                        !pkcs11
                            .get_token_info(*s)
                            .expect("C_GetTokenInfo")
                            .token_initialized()
                    })
                    .expect("SoftHSM always offers one uninitialized slot");
                Self {
                    kind,
                    slot: Cell::new(slot),
                    token_label: RefCell::new(None),
                    free_slot: RefCell::new(Some(guard)),
                }
            }
        }
    }

    /// Which module this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The loaded module.
    pub fn library(&self) -> &'static Library {
        match self.kind {
            Kind::Mesign => &mesign().library,
            Kind::SoftHsm => softhsm(),
        }
    }

    /// The `cryptoki` context.
    pub fn pkcs11(&self) -> &'static Pkcs11 {
        &self.library().pkcs11
    }

    /// Raw access to the module.
    pub fn raw(&self) -> &'static RawModule {
        &self.library().raw
    }

    /// The slot holding this target's token.
    pub fn slot(&self) -> Slot {
        self.slot.get()
    }

    /// The token label given at C_InitToken.
    pub fn token_label(&self) -> String {
        self.token_label
            .borrow()
            .clone()
            .expect("token not initialized yet")
    }

    /// Whether `divergence` applies to this target; logs it when it does.
    pub fn diverges(&self, divergence: Divergence) -> bool {
        let applies = divergence.diverging_kind() == self.kind;
        if applies {
            eprintln!("divergence [{}]: {}", self.kind.name(), divergence.note());
        }
        applies
    }

    /// Our daemon's state directory (None for SoftHSM).
    pub fn daemon_state_dir(&self) -> Option<PathBuf> {
        match self.kind {
            Kind::Mesign => mesign()
                .daemon
                .lock()
                .unwrap()
                .as_ref()
                .map(|d| d.state_dir().to_path_buf()),
            Kind::SoftHsm => None,
        }
    }

    /// C_InitToken with the suite's SO PIN, then find the slot again by
    /// label (SoftHSM moves an initialized token to a new slot id).
    pub fn init_token(&self, label: &str) {
        self.pkcs11()
            .init_token(self.slot(), &pin(SO_PIN), label)
            .unwrap_or_else(|e| panic!("{}: C_InitToken: {e}", self.kind.name()));
        *self.token_label.borrow_mut() = Some(label.to_owned());
        self.relocate_slot();
        // The free slot is taken; the next blank SoftHSM target may look.
        self.free_slot.borrow_mut().take();
    }

    /// C_InitPIN as the SO with the suite's user PIN.
    pub fn init_user_pin(&self) {
        let session = self.session();
        session
            .login(UserType::So, Some(&pin(SO_PIN)))
            .expect("SO C_Login");
        session.init_pin(&pin(USER_PIN)).expect("C_InitPIN");
        session.logout().expect("SO C_Logout");
    }

    /// A read-write session, logged in or not depending on the application's
    /// current login state.
    pub fn session(&self) -> Session {
        self.pkcs11()
            .open_rw_session(self.slot())
            .unwrap_or_else(|e| panic!("{}: C_OpenSession: {e}", self.kind.name()))
    }

    /// A read-write session logged in as the user.
    pub fn user_session(&self) -> Session {
        let session = self.session();
        login_user(&session);
        session
    }

    /// Simulates a restart of everything below the application: the module is
    /// finalized, our daemon is stopped with SIGTERM and started again on the
    /// same state directory, and the module is initialized again. All of this
    /// target's sessions must be closed before calling.
    pub fn restart(&self) {
        let library = self.library();
        if self.kind == Kind::Mesign {
            mesign().keeper.lock().unwrap().take();
        }
        let rv = library.raw.finalize();
        assert_eq!(rv, cryptoki_sys::CKR_OK, "{}: C_Finalize", self.kind.name());
        if self.kind == Kind::Mesign {
            let mut slot = mesign().daemon.lock().unwrap();
            let old = slot.take().expect("daemon running");
            let status = old.stop();
            eprintln!("mesign-hsmd stopped with {status}");
            *slot = Some(MesignProcess::start_daemon());
        }
        initialize(&library.pkcs11);
        self.relocate_slot();
    }

    /// The daemon's output so far (empty for SoftHSM), for failure messages.
    pub fn daemon_log(&self) -> String {
        match self.kind {
            Kind::Mesign => mesign()
                .daemon
                .lock()
                .unwrap()
                .as_ref()
                .map(Daemon::log_text)
                .unwrap_or_default(),
            Kind::SoftHsm => String::new(),
        }
    }

    fn relocate_slot(&self) {
        let label = self.token_label();
        let pkcs11 = self.pkcs11();
        let matches: Vec<Slot> = pkcs11
            .get_slots_with_token()
            .expect("C_GetSlotList")
            .into_iter()
            .filter(|s| pkcs11.get_token_info(*s).is_ok_and(|i| i.label() == label))
            .collect();
        assert_eq!(
            matches.len(),
            1,
            "{}: expected one token labelled {label:?}",
            self.kind.name()
        );
        self.slot.set(matches[0]);
    }

    fn token_info_initialized(&self) -> bool {
        self.pkcs11()
            .get_token_info(self.slot())
            .expect("C_GetTokenInfo")
            .token_initialized()
    }

    fn current_label(&self) -> String {
        self.pkcs11()
            .get_token_info(self.slot())
            .expect("C_GetTokenInfo")
            .label()
            .to_owned()
    }
}

/// Logs `session`'s application in as the user unless it already is.
pub fn login_user(session: &Session) {
    match session.login(UserType::User, Some(&pin(USER_PIN))) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("user C_Login: {e}"),
    }
}

/// Asserts that `result` failed with exactly `want`.
#[track_caller]
pub fn expect_rv<T: std::fmt::Debug>(result: cryptoki::error::Result<T>, want: RvError) {
    match result {
        Err(Error::Pkcs11(got, _)) if got == want => {}
        other => panic!("expected {want:?}, got {other:?}"),
    }
}
