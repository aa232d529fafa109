//! Library lifecycle (PKCS#11 3.0 §5.4, DESIGN checklist items 3 and 4),
//! against our module and SoftHSMv2: the four C_Initialize locking cases,
//! pReserved, a second C_Initialize, calls before C_Initialize and after
//! C_Finalize, C_GetFunctionList before initialisation reporting 2.40, and
//! the 3.0 interfaces.
//!
//! The modules are loaded raw (no `cryptoki` context initialises them), and
//! every case starts and ends with its module uninitialised; one lock
//! serialises the cases because a module's state is process-wide. Our
//! module connects to its daemon lazily, so none is needed here.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki_sys::*;
use softhsm_tests::binaries;
use softhsm_tests::ffi::{InitArgs, MutexCallbacks, RawModule};
use softhsm_tests::{Divergence, Kind};

/// Serialises the cases: C_Initialize state is per process.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// SoftHSM needs a configuration even to initialise.
fn softhsm_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lifecycle-")
            .tempdir()
            .expect("temp dir")
            .keep();
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        // Set before SoftHSM is loaded; our module ignores it.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        // Our module would look for a daemon only when a call needs one.
        std::env::set_var("MESIGN_HSM_SOCKET", dir.join("no-daemon.sock"));
        conf
    })
}

fn module(kind: Kind) -> &'static RawModule {
    softhsm_conf();
    static OURS: OnceLock<RawModule> = OnceLock::new();
    static SOFTHSM: OnceLock<RawModule> = OnceLock::new();
    match kind {
        Kind::Mesign => {
            OURS.get_or_init(|| RawModule::open(&binaries::require(binaries::MESIGN_MODULE)))
        }
        Kind::SoftHsm => {
            SOFTHSM.get_or_init(|| RawModule::open(Path::new(binaries::SOFTHSM_MODULE)))
        }
    }
}

fn diverges(kind: Kind, d: Divergence) -> bool {
    let applies = d.diverging_kind() == kind;
    if applies {
        eprintln!("divergence [{}]: {}", kind.name(), d.note());
    }
    applies
}

fn args(mutexes: MutexCallbacks, flags: CK_FLAGS) -> Option<InitArgs> {
    Some(InitArgs {
        mutexes,
        flags,
        reserved_non_null: false,
    })
}

/// C_Initialize with `init` must answer `want`; when it succeeded the
/// library works and is finalized again.
fn expect_init(m: &RawModule, init: Option<InitArgs>, want: CK_RV, case: &str) {
    let rv = m.initialize_with(init);
    assert_eq!(rv, want, "{case}: C_Initialize answered {rv:#x}");
    if rv == CKR_OK {
        assert_eq!(m.info().0, CKR_OK, "{case}: C_GetInfo after C_Initialize");
        assert_eq!(m.finalize_with(false), CKR_OK, "{case}: C_Finalize");
    } else {
        assert_eq!(
            m.info().0,
            CKR_CRYPTOKI_NOT_INITIALIZED,
            "{case}: a refused C_Initialize must leave the library uninitialised"
        );
    }
}

fn four_locking_cases(kind: Kind) {
    let _g = serial();
    let m = module(kind);
    expect_init(m, None, CKR_OK, "NULL arguments");
    expect_init(
        m,
        args(MutexCallbacks::None, 0),
        CKR_OK,
        "no locking needed",
    );
    expect_init(
        m,
        args(MutexCallbacks::None, CKF_OS_LOCKING_OK),
        CKR_OK,
        "OS locking",
    );
    let app_only = if diverges(kind, Divergence::SoftHsmHonoursApplicationMutexes) {
        CKR_OK
    } else {
        CKR_CANT_LOCK
    };
    expect_init(
        m,
        args(MutexCallbacks::All, 0),
        app_only,
        "application mutexes only",
    );
    expect_init(
        m,
        args(MutexCallbacks::All, CKF_OS_LOCKING_OK),
        CKR_OK,
        "application mutexes or OS locking",
    );
    expect_init(
        m,
        args(MutexCallbacks::Partial, CKF_OS_LOCKING_OK),
        CKR_ARGUMENTS_BAD,
        "two of four mutex callbacks",
    );
}

fn reserved_must_be_null(kind: Kind) {
    let _g = serial();
    let m = module(kind);
    let reserved = Some(InitArgs {
        mutexes: MutexCallbacks::None,
        flags: CKF_OS_LOCKING_OK,
        reserved_non_null: true,
    });
    expect_init(m, reserved, CKR_ARGUMENTS_BAD, "non-NULL pReserved");
    assert_eq!(m.initialize_with(None), CKR_OK);
    assert_eq!(
        m.finalize_with(true),
        CKR_ARGUMENTS_BAD,
        "C_Finalize(non-NULL)"
    );
    assert_eq!(m.info().0, CKR_OK, "a refused C_Finalize keeps the library");
    assert_eq!(m.finalize_with(false), CKR_OK);
}

fn second_initialize_is_refused(kind: Kind) {
    let _g = serial();
    let m = module(kind);
    assert_eq!(m.initialize_with(None), CKR_OK);
    assert_eq!(
        m.initialize_with(args(MutexCallbacks::None, CKF_OS_LOCKING_OK)),
        CKR_CRYPTOKI_ALREADY_INITIALIZED
    );
    assert_eq!(m.info().0, CKR_OK, "still initialised");
    assert_eq!(m.finalize_with(false), CKR_OK);
    assert_eq!(m.finalize_with(false), CKR_CRYPTOKI_NOT_INITIALIZED);
}

fn every_call_before_initialize_is_not_initialized(kind: Kind) {
    let _g = serial();
    let m = module(kind);
    for (when, setup) in [("before C_Initialize", false), ("after C_Finalize", true)] {
        if setup {
            assert_eq!(m.initialize_with(None), CKR_OK);
            assert_eq!(m.finalize_with(false), CKR_OK);
        }
        for (name, rv) in m.spread_of_calls() {
            assert_eq!(
                rv, CKR_CRYPTOKI_NOT_INITIALIZED,
                "{name} {when} answered {rv:#x}"
            );
        }
    }
}

fn function_list_reports_2_40_before_initialize(kind: Kind) {
    let _g = serial();
    let v = module(kind).function_list_version();
    assert_eq!((v.major, v.minor), (2, 40));
}

fn interfaces_offer_3_0_and_2_40(kind: Kind) {
    let _g = serial();
    let m = module(kind);
    let Some((rv, list)) = m.interfaces() else {
        assert!(
            diverges(kind, Divergence::SoftHsmHasNoInterfaces),
            "{} exports no C_GetInterfaceList",
            kind.name()
        );
        assert!(m.default_interface(0).is_none());
        return;
    };
    assert_eq!(rv, CKR_OK);
    let versions: Vec<(String, u8, u8)> = list
        .into_iter()
        .map(|(name, v)| (name, v.major, v.minor))
        .collect();
    assert_eq!(
        versions,
        [("PKCS 11".into(), 3, 0), ("PKCS 11".into(), 2, 40)],
        "interfaces before C_Initialize"
    );
    let v = m
        .default_interface(0)
        .expect("C_GetInterface")
        .expect("CKR_OK");
    assert_eq!((v.major, v.minor), (3, 0), "the default interface is 3.0");
    // The fork-safe flavour (each process keeping its sessions) is not
    // offered: a forked child starts uninitialised instead.
    let fork_safe = m.default_interface(CKF_INTERFACE_FORK_SAFE);
    assert!(
        matches!(fork_safe, Some(Err(CKR_ARGUMENTS_BAD))),
        "fork-safe interface: {:?}",
        fork_safe.map(|r| r.map(|v| (v.major, v.minor)))
    );
}

macro_rules! both {
    ($($case:ident),+ $(,)?) => {
        mod mesign {
            $(#[test] fn $case() { super::$case(softhsm_tests::Kind::Mesign) })+
        }
        mod softhsm {
            $(#[test] fn $case() { super::$case(softhsm_tests::Kind::SoftHsm) })+
        }
    };
}

both!(
    four_locking_cases,
    reserved_must_be_null,
    second_initialize_is_refused,
    every_call_before_initialize_is_not_initialized,
    function_list_reports_2_40_before_initialize,
    interfaces_offer_3_0_and_2_40,
);
