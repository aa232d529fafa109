//! The cdylib must export exactly C_GetFunctionList, C_GetInterfaceList and
//! C_GetInterface: every other C_* is reached through the function tables.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/libmesign_pkcs11.so`, next to this test's `deps/`.
fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("libmesign_pkcs11.so")
}

#[test]
fn exactly_three_c_symbols_are_exported() {
    let lib = cdylib();
    assert!(
        lib.exists(),
        "{} not built; run `cargo build -p mesign-pkcs11` first",
        lib.display()
    );
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm (binutils) must be installed");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut c_symbols: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|name| name.starts_with("C_"))
        .collect();
    c_symbols.sort_unstable();
    assert_eq!(
        c_symbols,
        ["C_GetFunctionList", "C_GetInterface", "C_GetInterfaceList"]
    );
}
