//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`).
//!
//! Each function takes the fuzzer's bytes and drives the daemon the way a
//! hostile local client could; each must return, or fail an invariant
//! assertion on a real bug, never panic otherwise. The targets themselves
//! are one-liners.

use std::sync::Arc;

use cryptoki_sys::*;
use mesign_proto::{
    decode_frame_body, read_frame, Reply, ReplyResult, Request, RequestBody, PROTOCOL_VERSION,
};

use pci_driver_shim::command::{CardInfo, CardRequest, CardResponse};

use crate::attributes::AttrMap;
use crate::card::fake::FakeCard;
use crate::card::{CardFailure, CardPort};
use crate::certificate;
use crate::hsm::{Hsm, PinPolicy, Slot};
use crate::server;
use crate::sessions::AppKey;

/// The SO PIN of the token every request sequence starts with.
pub const SO_PIN: &[u8] = b"12345678";
/// Its user PIN.
pub const USER_PIN: &[u8] = b"123456";
/// The process id the fuzzed connection is served as.
pub const CLIENT_PID: i32 = 4242;

/// The scripted card of the fuzzed daemon: the unit tests' [`FakeCard`],
/// except that it holds a domain TLS CA, so that the domain CA requests
/// get past the card and their audit path runs too.
#[derive(Default)]
pub struct FuzzCard(FakeCard);

/// The CA public key [`FuzzCard`] reports: an uncompressed P-256 point.
pub const CA_POINT: [u8; 65] = {
    let mut point = [0x3c; 65];
    point[0] = 4;
    point
};

impl CardPort for FuzzCard {
    fn call(&self, request: &CardRequest) -> Result<CardResponse, CardFailure> {
        match request {
            CardRequest::DomainCaPublic => Ok(CardResponse::Bytes(CA_POINT.to_vec())),
            // A DER ECDSA signature's shape; nothing verifies it here.
            CardRequest::DomainCaSign { .. } => {
                Ok(CardResponse::Bytes(vec![0x30, 6, 2, 1, 1, 2, 1, 1]))
            }
            other => self.0.call(other),
        }
    }

    fn info(&self) -> CardInfo {
        self.0.info()
    }

    fn backend(&self) -> String {
        self.0.backend()
    }
}

/// A fresh daemon over a scripted in-memory card and an in-memory store,
/// its token initialized with [`SO_PIN`] and [`USER_PIN`] and no session
/// open. The first session a client opens gets handle 2.
pub fn daemon() -> Hsm {
    let slot = Slot::in_memory(Arc::new(FuzzCard::default())).expect("in-memory slot");
    let pins = PinPolicy {
        // Hashing cost is not what is being fuzzed.
        iterations: 1,
        ..PinPolicy::default()
    };
    let hsm = Hsm::new(pins, vec![slot]);
    let setup = AppKey { pid: 1, app: 1 };
    hsm.connect(setup);
    let run = |body| {
        hsm.handle(setup, body)
            .unwrap_or_else(|e| panic!("fuzz daemon set-up: {e}"))
    };
    run(RequestBody::InitToken {
        slot: 0,
        so_pin: SO_PIN.to_vec(),
        label: b"fuzz".to_vec(),
    });
    let session = match run(RequestBody::OpenSession {
        slot: 0,
        flags: CKF_SERIAL_SESSION | CKF_RW_SESSION,
    }) {
        mesign_proto::ReplyBody::Session(s) => s,
        other => panic!("fuzz daemon set-up: {other:?}"),
    };
    run(RequestBody::Login {
        session,
        user_type: CKU_SO,
        pin: SO_PIN.to_vec(),
    });
    run(RequestBody::InitPin {
        session,
        pin: USER_PIN.to_vec(),
    });
    hsm.disconnect(setup);
    hsm
}

/// The daemon's request handler behind the frame decoder: `data` is what
/// one client connection sends (length-prefixed CBOR frames), served by a
/// fresh [`daemon`] in whatever session state the frames lead to.
///
/// Invariants: every reply is a well-formed frame answering a request, in
/// order; no handler panics (the server would turn that into
/// CKR_GENERAL_ERROR); the replication requests are refused (a Unix-socket
/// client, like this in-memory one, has no box certificate); when the
/// connection closes, none of its session objects is left.
pub fn requests(data: &[u8]) {
    let replies = replies(data);
    for reply in &replies {
        assert_ne!(
            reply.result,
            ReplyResult::Err(CKR_GENERAL_ERROR),
            "a request handler panicked"
        );
    }
    for (request, reply) in decoded_requests(data).iter().zip(&replies) {
        assert_eq!(reply.id, request.id, "a reply out of order");
        if matches!(
            request.body,
            RequestBody::ReplicaVersions { .. } | RequestBody::ReplicaApply { .. }
        ) {
            assert!(
                matches!(reply.result, ReplyResult::Err(_)),
                "a replication request served without a box certificate"
            );
        }
    }
}

/// The requests the daemon reads from `data`, up to the first frame it
/// cannot take (that one is answered with id 0 or its own and ends the
/// connection, so it is left out).
fn decoded_requests(data: &[u8]) -> Vec<Request> {
    let mut rest = data;
    let mut body = Vec::new();
    let mut requests = Vec::new();
    while read_frame(&mut rest, &mut body).is_ok() {
        match decode_frame_body::<Request>(&body) {
            Ok(request) if request.version == PROTOCOL_VERSION => requests.push(request),
            _ => break,
        }
    }
    requests
}

/// [`requests`] without the panic check: the replies, in order (seed
/// tooling uses them to see how far a sequence gets).
pub fn replies(data: &[u8]) -> Vec<Reply> {
    let hsm = daemon();
    let mut written = Vec::new();
    server::serve_buffer(&hsm, CLIENT_PID, data, &mut written);
    let mut rest = &written[..];
    let mut body = Vec::new();
    let mut replies = Vec::new();
    while !rest.is_empty() {
        read_frame(&mut rest, &mut body).expect("the daemon writes whole frames");
        replies.push(decode_frame_body(&body).expect("the daemon's replies decode"));
    }
    assert_eq!(
        hsm.session_objects(),
        0,
        "session objects outlived their connection"
    );
    replies
}

/// Encodes `bodies` as the frames of one connection (ids from 1), for seeds.
pub fn frames(bodies: &[RequestBody]) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, body) in bodies.iter().enumerate() {
        let request = Request {
            version: PROTOCOL_VERSION,
            id: id as u64 + 1,
            body: body.clone(),
        };
        let mut frame = Vec::new();
        mesign_proto::encode_frame(&request, &mut frame);
        out.extend_from_slice(&frame);
    }
    out
}

/// Certificate import: `data` as the CKA_VALUE of a certificate object.
///
/// Invariants: whatever parses yields a DER subject and issuer Name
/// (SEQUENCEs), a DER INTEGER serial, CK_DATEs of eight digits, a
/// three-byte check value, and completing a template fills exactly these.
pub fn certificate(data: &[u8]) {
    let Ok(fields) = certificate::parse(data) else {
        return;
    };
    for name in [&fields.subject, &fields.issuer] {
        assert_eq!(name.first(), Some(&0x30), "a Name is a SEQUENCE");
    }
    assert_eq!(fields.serial_number.first(), Some(&0x02), "an INTEGER");
    for date in [&fields.start_date, &fields.end_date] {
        assert!(
            date.len() == 8 && date.iter().all(u8::is_ascii_digit),
            "not a CK_DATE: {date:?}"
        );
    }
    assert_eq!(fields.check_value.len(), 3);
    let mut map = AttrMap::new();
    map.insert(CKA_VALUE, data.to_vec());
    certificate::complete(&mut map).expect("a certificate that parses completes");
    assert_eq!(map[&CKA_SUBJECT], fields.subject);
    assert_eq!(map[&CKA_ISSUER], fields.issuer);
    assert_eq!(map[&CKA_SERIAL_NUMBER], fields.serial_number);
    assert_eq!(map[&CKA_START_DATE], fields.start_date);
    assert_eq!(map[&CKA_END_DATE], fields.end_date);
    assert_eq!(map[&CKA_CHECK_VALUE], fields.check_value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::ReplyBody;

    #[test]
    fn replication_is_refused_and_the_domain_ca_answers() {
        let bodies = [
            RequestBody::Hello { app: 1 },
            RequestBody::ReplicaVersions { slot: 0 },
            RequestBody::DomainCaPublic { slot: 0 },
        ];
        let data = frames(&bodies);
        requests(&data);
        let replies = replies(&data);
        assert_eq!(
            replies.iter().map(|r| r.id).collect::<Vec<_>>(),
            decoded_requests(&data)
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        );
        assert_eq!(replies[1].result, ReplyResult::Err(CKR_FUNCTION_REJECTED));
        assert_eq!(
            replies[2].result,
            ReplyResult::Ok(ReplyBody::Bytes(CA_POINT.to_vec()))
        );
    }
}
