//! Microbenchmark of [`Card::call`] against a real `mesign-card-emu`: the
//! card path alone (ring, doorbell, firmware, completion, wake-up), without
//! the daemon or the PKCS#11 module in front of it.
//!
//! ```text
//! cargo build --release -p mesign-pci-driver-shim --examples --bins
//! target/release/examples/card-call [p256|rsa|random] [threads...] [--seconds S]
//! ```
//!
//! Prints ops/s and p50/p99 latency per thread count. `random` asks for one
//! random byte: no cryptography, so it shows the per-command overhead.
//! Signatures are not verified here (the crate's tests do that).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pci_driver_shim::command::{
    CardRequest, CardResponse, Curve, Hash, KeyPolicy, KeySpec, SignScheme,
};
use pci_driver_shim::{spawn_emulator, Card};

fn main() {
    let mut op = "p256".to_owned();
    let mut threads = Vec::new();
    let mut seconds = 2.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).expect("seconds"),
            "p256" | "rsa" | "random" => op = arg,
            n => threads.push(n.parse::<usize>().expect("a thread count")),
        }
    }
    if threads.is_empty() {
        threads = vec![1, 2, 4];
    }
    let exe = emulator_exe();
    let dir = tempfile::tempdir().expect("temporary state dir");
    let (_emulator, device) = spawn_emulator(&exe, dir.path()).expect("the emulator starts");
    let card = Arc::new(Card::open(device).expect("the card opens"));
    let request = Arc::new(request_for(&card, &op));
    for &n in &threads {
        let (ops, mut latencies) = run(&card, &request, n, Duration::from_secs_f64(seconds));
        latencies.sort_unstable();
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "{op} {n} thread(s): {:.0} ops/s, p50 {} µs, p99 {} µs",
            ops as f64 / seconds,
            pick(0.5).as_micros(),
            pick(0.99).as_micros()
        );
    }
}

fn run(
    card: &Arc<Card>,
    request: &Arc<CardRequest>,
    threads: usize,
    length: Duration,
) -> (usize, Vec<Duration>) {
    let end = Instant::now() + length;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let card = Arc::clone(card);
            let request = Arc::clone(request);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    let started = Instant::now();
                    card.call(&request).expect("the card answers");
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    let latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("a bench thread"))
        .collect();
    (latencies.len(), latencies)
}

fn request_for(card: &Card, op: &str) -> CardRequest {
    let spec = match op {
        "random" => return CardRequest::Random { len: 1 },
        "rsa" => KeySpec::Rsa { bits: 2048 },
        _ => KeySpec::Ec(Curve::P256),
    };
    let policy = KeyPolicy {
        object_id: 1,
        spec,
        sign: true,
        decrypt: false,
        unwrap: false,
        derive: false,
        sensitive: true,
        extractable: false,
        secret: None,
    };
    let blob = match card.call(&CardRequest::GenerateKeyPair {
        policy: policy.clone(),
    }) {
        Ok(CardResponse::KeyPair { blob, .. }) => blob,
        other => panic!("key generation failed: {other:?}"),
    };
    let scheme = match spec {
        KeySpec::Rsa { .. } => SignScheme::RsaPkcs1(Hash::Sha256),
        KeySpec::Ec(_) => SignScheme::Ecdsa,
        KeySpec::Ed25519 => SignScheme::Ed25519,
        KeySpec::Aes { .. } | KeySpec::GenericSecret { .. } => {
            panic!("secret keys are not key pairs")
        }
    };
    CardRequest::Sign {
        blob,
        policy,
        scheme,
        input: vec![0x5a; 32],
    }
}

/// `target/<profile>/mesign-card-emu`, seen from `target/<profile>/examples/`.
fn emulator_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent()
        .and_then(|examples| examples.parent())
        .expect("run from target/<profile>/examples")
        .join("mesign-card-emu")
}
