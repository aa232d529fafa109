//! Link options for the cdylib.
//!
//! `-z nodelete`: the crypto library inside the module registers per-thread
//! destructors with pthread keys. If a host dlclose()d the module and the
//! code were unmapped, every thread that had used it would crash on exit.
//! Keeping the library mapped after dlclose is what statically linked
//! crypto needs (tests/unload.rs proves it).

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
