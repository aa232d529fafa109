//! Writes the seeds of the C-boundary fuzz targets that need structures
//! built from the fuzzer's bytes (nested templates, ECDH1, OAEP and GCM
//! parameters, the wrap mechanisms):
//!
//! ```text
//! cargo run -p mesign-pkcs11 --features fuzzing --example fuzz-seeds
//! ```
//!
//! They are numbered from 20 on; the lower seeds are earlier fuzzer finds.
//! Each seed is run through its target here first.

use std::path::Path;

use mesign_pkcs11::ffi::fuzzing;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mechanisms: Vec<Vec<u8>> = fuzzing::mechanism_seeds()
        .into_iter()
        .map(|(seed, _)| seed)
        .collect();
    write(
        &corpus.join("c_mechanism"),
        &mechanisms,
        fuzzing::mechanism_parameters,
    );
    write(
        &corpus.join("c_template"),
        &fuzzing::template_seeds(),
        fuzzing::attribute_template,
    );
}

fn write(dir: &Path, seeds: &[Vec<u8>], target: fn(&[u8])) {
    std::fs::create_dir_all(dir).expect("create the corpus dir");
    for (n, seed) in seeds.iter().enumerate() {
        target(seed);
        std::fs::write(dir.join(format!("seed-{:02}", n + 20)), seed).expect("write a seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}
