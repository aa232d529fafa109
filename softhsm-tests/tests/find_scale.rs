//! C_FindObjects among 10,000 token objects is indexed: creating them (EC
//! public keys, which carry CKA_ID; data objects do not) goes through the
//! module, then 100 searches by CKA_ID and 100 by CKA_LABEL
//! must each take under 1 ms at the median.
//!
//! The objects are created by 16 threads, each with its own session, as a
//! provisioning tool would: the daemon's group commit lets concurrent
//! creations share one durable commit, which keeps this case within seconds
//! (one creation at a time pays a full fsync each).

use std::time::{Duration, Instant};

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use softhsm_tests::keys::{self, KeySpec};
use softhsm_tests::verify::Curve;
use softhsm_tests::{conformance, Divergence, Target};

conformance!(ready => find_among_ten_thousand_token_objects);

/// Threads creating objects at once, each with its own session.
const CREATORS: usize = 16;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn find_among_ten_thousand_token_objects(t: &Target) {
    let count: usize = if t.diverges(Divergence::SoftHsmFileStoreScale) {
        100
    } else {
        // MESIGN_SCALE_OBJECTS lowers the count for quick local runs.
        std::env::var("MESIGN_SCALE_OBJECTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000)
    };
    let s = t.user_session();
    let pair = keys::generate(&s, KeySpec::Ec(Curve::P256), "scale-source");
    let point = keys::bytes(&s, pair.public, AttributeType::EcPoint).expect("CKA_EC_POINT");
    let started = Instant::now();
    let pkcs11 = t.pkcs11();
    let slot = t.slot();
    let point = &point;
    std::thread::scope(|scope| {
        for worker in 0..CREATORS {
            scope.spawn(move || {
                let session = pkcs11
                    .open_rw_session(slot)
                    .unwrap_or_else(|e| panic!("C_OpenSession for creator {worker}: {e}"));
                for i in (worker..count).step_by(CREATORS) {
                    session
                        .create_object(&[
                            Attribute::Class(ObjectClass::PUBLIC_KEY),
                            Attribute::KeyType(KeyType::EC),
                            Attribute::EcParams(Curve::P256.params_der()),
                            Attribute::EcPoint(point.clone()),
                            Attribute::Token(true),
                            Attribute::Private(false),
                            Attribute::Id(format!("scale-id-{i}").into_bytes()),
                            Attribute::Label(format!("scale-label-{i}").into_bytes()),
                        ])
                        .unwrap_or_else(|e| panic!("C_CreateObject {i}: {e}"));
                }
            });
        }
    });
    let took = started.elapsed();
    eprintln!(
        "{}: created {count} token objects from {CREATORS} sessions in {took:?} ({:.0}/s)",
        t.kind().name(),
        count as f64 / took.as_secs_f64()
    );

    let mut by_id = Vec::new();
    let mut by_label = Vec::new();
    for n in 0..100 {
        let i = (n * 97 + 13) % count;
        let start = Instant::now();
        let found = s
            .find_objects(&[Attribute::Id(format!("scale-id-{i}").into_bytes())])
            .expect("C_FindObjects by CKA_ID");
        by_id.push(start.elapsed());
        assert_eq!(found.len(), 1, "object {i} by CKA_ID");
        let start = Instant::now();
        let found = s
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(format!("scale-label-{i}").into_bytes()),
            ])
            .expect("C_FindObjects by CKA_LABEL");
        by_label.push(start.elapsed());
        assert_eq!(found.len(), 1, "object {i} by CKA_LABEL");
    }
    let (id, label) = (median(by_id), median(by_label));
    eprintln!(
        "{}: median find by id {id:?}, by label {label:?}",
        t.kind().name()
    );
    if !t.diverges(Divergence::SoftHsmFileStoreScale) {
        assert!(
            id < Duration::from_millis(1),
            "median find by CKA_ID {id:?}"
        );
        assert!(
            label < Duration::from_millis(1),
            "median find by CKA_LABEL {label:?}"
        );
    }
}
