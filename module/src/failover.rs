//! Several daemons that are replicas of one token (the same cloning domain,
//! keys cloned by backup import or replication): single-part signing is
//! spread over the healthy ones, and signing goes on when one dies.
//!
//! With one daemon configured, [`Daemons::One`] passes every call straight
//! to the [`Daemon`]: no lock, no allocation, no bookkeeping is added.
//!
//! With several ([`Replicas`]):
//! - A module session is opened on the first healthy daemon, its *anchor*;
//!   the session handle and the object handles the application sees are
//!   the anchor's. Everything but signing (sessions, login, find,
//!   attributes, create, destroy, generate, decryption, secret-key and
//!   multi-part operations) goes to the anchor; when it is down those
//!   calls fail as with one daemon (`CKR_DEVICE_REMOVED`, or
//!   `CKR_SESSION_HANDLE_INVALID` once it restarted), and a session opened
//!   then is anchored on the next healthy daemon.
//! - The `Sign` request (of `C_Sign`, and of `C_SignFinal`: the module
//!   hashes multi-part data itself, so no daemon holds a signature's state)
//!   goes round robin to the healthy daemons. On a daemon other than the
//!   anchor it runs on a *backing* session opened there when first needed;
//!   the user login is replayed on it (so the module keeps the user PIN in
//!   memory, zeroized when forgotten, while the application is logged in),
//!   and the key is found there by `CKA_UNIQUE_ID` or, when the daemon has
//!   no such attribute, by (`CKA_CLASS`, `CKA_ID`, `CKA_KEY_TYPE`), learnt
//!   from the anchor at `C_SignInit`. A replay the replica refuses (another
//!   PIN there) is not repeated until the next `C_Login`, so it cannot lock
//!   the replica's PIN. Session objects and keys with
//!   `CKA_ALWAYS_AUTHENTICATE` are signed on the anchor only.
//! - A daemon whose connection fails is marked down and its connections are
//!   dropped (it forgets our sessions); a request that could not be sent
//!   goes to the next daemon, a request in flight fails with
//!   `CKR_DEVICE_ERROR` (retryable: the application signs again and is
//!   served elsewhere). A down daemon is tried again by at most one call
//!   every [`RETRY_AFTER`]; when it answers, it serves again on fresh
//!   backing sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cryptoki_sys::*;
use mesign_proto::{attr, Attribute, AttributeValue, ReplyBody, RequestBody};
use zeroize::Zeroizing;

use crate::config;
use crate::connection::{wipe_secrets, Daemon};
use crate::error::Error;

/// How long a daemon that failed is left alone before one call tries it.
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The daemons of one library instance.
pub(crate) enum Daemons {
    /// The usual case: one daemon, used exactly as without failover.
    One(Daemon),
    /// Replicas of one token.
    Several(Replicas),
}

impl Daemons {
    /// Connects lazily, like [`Daemon::new`].
    pub(crate) fn new(config: config::Daemons, app: u64) -> Result<Self, Error> {
        let mut members = Vec::with_capacity(config.endpoints.len());
        for endpoint in config.endpoints {
            members.push(Daemon::new(endpoint, config.tls.clone(), app)?);
        }
        if members.len() == 1 {
            return Ok(Daemons::One(members.remove(0)));
        }
        Ok(Daemons::Several(Replicas::new(members)))
    }

    /// Sends one request where it belongs (see the module docs).
    pub(crate) fn call(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        match self {
            Daemons::One(daemon) => daemon.call(body),
            Daemons::Several(r) => r.call(body),
        }
    }

    /// Sends a `Sign` request: pipelined on the one daemon, or spread over
    /// the replicas.
    pub(crate) fn sign(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        match self {
            Daemons::One(daemon) => daemon.call_pipelined(body),
            Daemons::Several(r) => r.sign(body),
        }
    }

    /// C_OpenSession: on the one daemon, or anchored on the first healthy.
    pub(crate) fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<u64, Error> {
        let body = RequestBody::OpenSession { slot, flags };
        match self {
            Daemons::One(daemon) => session_reply(daemon.call(body)),
            Daemons::Several(r) => r.open_session(slot, flags),
        }
    }

    /// C_CloseSession. With replicas, a session whose anchor is down or
    /// has restarted is gone there already and counts as closed.
    pub(crate) fn close_session(&self, session: CK_SESSION_HANDLE) -> Result<(), Error> {
        match self {
            Daemons::One(daemon) => done(daemon.call(RequestBody::CloseSession { session })),
            Daemons::Several(r) => r.close_session(session),
        }
    }

    /// C_CloseAllSessions: on every daemon that answers.
    pub(crate) fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<(), Error> {
        match self {
            Daemons::One(daemon) => done(daemon.call(RequestBody::CloseAllSessions { slot })),
            Daemons::Several(r) => r.close_all_sessions(slot),
        }
    }

    /// After a successful C_Login: with replicas, a user PIN is kept for
    /// replaying on backing sessions.
    pub(crate) fn logged_in(
        &self,
        session: CK_SESSION_HANDLE,
        user_type: CK_USER_TYPE,
        pin: &[u8],
    ) {
        if let Daemons::Several(r) = self {
            r.logged_in(session, user_type, pin);
        }
    }

    /// After a successful C_Logout: the PIN is forgotten and the replicas
    /// are logged out.
    pub(crate) fn logged_out(&self, session: CK_SESSION_HANDLE) {
        if let Daemons::Several(r) = self {
            r.logged_out(session);
        }
    }

    /// At C_SignInit: with replicas, learns how to find `key` on them.
    pub(crate) fn learn_key(&self, session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
        if let Daemons::Several(r) = self {
            r.learn_key(session, key);
        }
    }

    /// See [`Daemon::abandon`].
    pub(crate) fn abandon(&self) {
        match self {
            Daemons::One(daemon) => daemon.abandon(),
            Daemons::Several(r) => r.members.iter().for_each(|m| m.daemon.abandon()),
        }
    }
}

fn session_reply(reply: Result<ReplyBody, Error>) -> Result<u64, Error> {
    match reply? {
        ReplyBody::Session(h) => Ok(h),
        _ => Err(Error::Transport),
    }
}

fn done(reply: Result<ReplyBody, Error>) -> Result<(), Error> {
    match reply? {
        ReplyBody::Done => Ok(()),
        _ => Err(Error::Transport),
    }
}

/// True for the errors that say a daemon's connection failed.
fn connection_failed(e: &Error) -> bool {
    matches!(e, Error::DaemonUnreachable | Error::Transport)
}

/// One daemon among the replicas, and what the module knows of its health.
struct Member {
    daemon: Daemon,
    down: AtomicBool,
    /// While down: when (ms since [`Replicas::start`]) a call may try it.
    retry_at: AtomicU64,
    /// Bumped each time it is marked down: sessions and logins there from
    /// an earlier generation are gone.
    generation: AtomicU64,
}

/// Several daemons, replicas of one token (see the module docs).
pub(crate) struct Replicas {
    members: Vec<Member>,
    start: Instant,
    next: AtomicUsize,
    routes: Mutex<Routes>,
}

/// The module's bookkeeping over the replicas.
#[derive(Default)]
struct Routes {
    sessions: HashMap<CK_SESSION_HANDLE, Route>,
    /// The user PIN of each slot while the application is logged in.
    pins: HashMap<CK_SLOT_ID, Zeroizing<Vec<u8>>>,
    /// (member, slot) → the generation in which the user login there is
    /// known to hold, or was refused.
    logins: HashMap<(usize, CK_SLOT_ID), (u64, Login)>,
    /// (anchor, key handle there) → how to find the key elsewhere; `None`
    /// for a session object, which lives on its anchor only.
    identities: HashMap<(usize, CK_OBJECT_HANDLE), Option<Vec<Attribute>>>,
    /// (member, generation, anchor, anchor's key handle) → the key's handle
    /// on that member, `None` when it has no such key.
    replica_keys: HashMap<(usize, u64, usize, CK_OBJECT_HANDLE), Option<CK_OBJECT_HANDLE>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    Holds,
    /// One thread is replaying the login.
    Pending,
    /// The member refused the PIN: not tried again until the next C_Login.
    Refused,
}

/// Where one module session lives.
struct Route {
    anchor: usize,
    /// The anchor's generation when the session was opened.
    anchor_generation: u64,
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    /// Per member: the backing session and its generation.
    backing: Vec<Option<(u64, CK_SESSION_HANDLE)>>,
}

/// Where a `Sign` goes on one member.
enum Target {
    /// The session and key as the application named them (the anchor).
    AsIs,
    /// A backing session and the key's handle there.
    Backing(CK_SESSION_HANDLE, CK_OBJECT_HANDLE),
    /// This member cannot serve it (no such key, no login there).
    Unusable,
}

impl Replicas {
    fn new(daemons: Vec<Daemon>) -> Self {
        Replicas {
            members: daemons
                .into_iter()
                .map(|daemon| Member {
                    daemon,
                    down: AtomicBool::new(false),
                    retry_at: AtomicU64::new(0),
                    generation: AtomicU64::new(0),
                })
                .collect(),
            start: Instant::now(),
            next: AtomicUsize::new(0),
            routes: Mutex::new(Routes::default()),
        }
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn generation(&self, m: usize) -> u64 {
        self.members[m].generation.load(Ordering::Acquire)
    }

    /// Whether a call may use member `m` now: it is up, or it is down and
    /// this caller wins the next retry.
    fn available(&self, m: usize) -> bool {
        let member = &self.members[m];
        if !member.down.load(Ordering::Acquire) {
            return true;
        }
        let now = self.now_ms();
        let due = member.retry_at.load(Ordering::Acquire);
        now >= due
            && member
                .retry_at
                .compare_exchange(
                    due,
                    now + RETRY_AFTER.as_millis() as u64,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Member `m`'s connection failed: its connections are dropped (the
    /// daemon then forgets our sessions there) and it rests a while.
    fn mark_down(&self, m: usize) {
        let member = &self.members[m];
        member.retry_at.store(
            self.now_ms() + RETRY_AFTER.as_millis() as u64,
            Ordering::Release,
        );
        if !member.down.swap(true, Ordering::AcqRel) {
            member.generation.fetch_add(1, Ordering::AcqRel);
            member.daemon.drop_connections();
        }
    }

    fn mark_up(&self, m: usize) {
        self.members[m].down.store(false, Ordering::Release);
    }

    /// Calls member `m`, keeping its health up to date.
    fn call_on(&self, m: usize, body: RequestBody) -> Result<ReplyBody, Error> {
        let result = self.members[m].daemon.call(body);
        match &result {
            Err(e) if connection_failed(e) => self.mark_down(m),
            _ => self.mark_up(m),
        }
        result
    }

    /// Calls the first available member, in configured order, that answers.
    fn call_first(&self, mut body: RequestBody) -> Result<ReplyBody, Error> {
        let mut result = Err(Error::DaemonUnreachable);
        for m in 0..self.members.len() {
            if !self.available(m) {
                continue;
            }
            result = self.call_on(m, body.clone());
            if !matches!(&result, Err(e) if connection_failed(e)) {
                break;
            }
        }
        // The copies sent were wiped by the connection; so is the original.
        wipe_secrets(&mut body);
        result
    }

    /// Session requests go to the session's anchor; a session the anchor
    /// no longer has (it restarted) is refused without asking, so that its
    /// handle cannot name a newer session there.
    fn call(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        self.forget_changed_keys(&body);
        let route = session_of(&body).and_then(|s| {
            let routes = self.routes();
            let r = routes.sessions.get(&s)?;
            Some((r.anchor, r.anchor_generation))
        });
        let Some((m, generation)) = route else {
            return self.call_first(body);
        };
        if generation != self.generation(m) {
            let mut body = body;
            wipe_secrets(&mut body);
            return Err(Error::Daemon(CKR_SESSION_HANDLE_INVALID));
        }
        if !self.available(m) {
            let mut body = body;
            wipe_secrets(&mut body);
            return Err(Error::DaemonUnreachable);
        }
        self.call_on(m, body)
    }

    /// What the module learnt about a key may not outlive a change to it:
    /// a destroyed key's handle could later name another key, and a token
    /// initialised afresh starts its handles over.
    fn forget_changed_keys(&self, body: &RequestBody) {
        match body {
            RequestBody::DestroyObject { object, .. }
            | RequestBody::SetAttributes { object, .. } => {
                let mut routes = self.routes();
                routes.identities.retain(|&(_, key), _| key != *object);
                routes
                    .replica_keys
                    .retain(|&(_, _, _, key), _| key != *object);
            }
            RequestBody::InitToken { .. } => {
                let mut routes = self.routes();
                routes.identities.clear();
                routes.replica_keys.clear();
            }
            _ => {}
        }
    }

    fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<u64, Error> {
        let mut last = Error::DaemonUnreachable;
        for m in 0..self.members.len() {
            if !self.available(m) {
                continue;
            }
            let generation = self.generation(m);
            let handle =
                match session_reply(self.call_on(m, RequestBody::OpenSession { slot, flags })) {
                    Ok(h) => h,
                    Err(e) if connection_failed(&e) => {
                        last = e;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
            let mut routes = self.routes();
            if routes.sessions.contains_key(&handle) {
                // Another daemon's session already has this handle (each
                // daemon numbers from a random start, so this is rare):
                // this one is given back and the next daemon asked.
                drop(routes);
                let _ = self.call_on(m, RequestBody::CloseSession { session: handle });
                last = Error::Daemon(CKR_SESSION_COUNT);
                continue;
            }
            routes.sessions.insert(
                handle,
                Route {
                    anchor: m,
                    anchor_generation: generation,
                    slot,
                    flags,
                    backing: vec![None; self.members.len()],
                },
            );
            return Ok(handle);
        }
        Err(last)
    }

    fn close_session(&self, session: CK_SESSION_HANDLE) -> Result<(), Error> {
        let Some(route) = self.routes().sessions.remove(&session) else {
            return done(self.call_first(RequestBody::CloseSession { session }));
        };
        for (m, backing) in route.backing.iter().enumerate() {
            if let Some((generation, handle)) = *backing {
                if generation == self.generation(m) {
                    let _ = self.call_on(m, RequestBody::CloseSession { session: handle });
                }
            }
        }
        let result = if route.anchor_generation == self.generation(route.anchor) {
            done(self.call_on(route.anchor, RequestBody::CloseSession { session }))
        } else {
            Ok(())
        };
        let mut routes = self.routes();
        // Closing the last session logs the application out, here as in
        // every daemon.
        if !routes.sessions.values().any(|r| r.slot == route.slot) {
            forget_slot(&mut routes, route.slot);
        }
        match result {
            Err(e) if connection_failed(&e) => Ok(()),
            other => other,
        }
    }

    fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<(), Error> {
        let mut first = None;
        for m in 0..self.members.len() {
            if self.available(m) {
                let result = done(self.call_on(m, RequestBody::CloseAllSessions { slot }));
                first.get_or_insert(result);
            }
        }
        let mut routes = self.routes();
        routes.sessions.retain(|_, r| r.slot != slot);
        forget_slot(&mut routes, slot);
        first.unwrap_or(Err(Error::DaemonUnreachable))
    }

    fn logged_in(&self, session: CK_SESSION_HANDLE, user_type: CK_USER_TYPE, pin: &[u8]) {
        if user_type != CKU_USER {
            return;
        }
        let mut routes = self.routes();
        let Some(route) = routes.sessions.get(&session) else {
            return;
        };
        let (anchor, slot) = (route.anchor, route.slot);
        let generation = self.generation(anchor);
        routes.pins.insert(slot, Zeroizing::new(pin.to_vec()));
        // A new C_Login may succeed where an old replay was refused.
        routes.logins.retain(|&(_, s), _| s != slot);
        routes
            .logins
            .insert((anchor, slot), (generation, Login::Holds));
    }

    fn logged_out(&self, session: CK_SESSION_HANDLE) {
        let mut logout = Vec::new();
        {
            let mut routes = self.routes();
            let Some(route) = routes.sessions.get(&session) else {
                return;
            };
            let (anchor, slot) = (route.anchor, route.slot);
            for &(m, s) in routes.logins.keys() {
                if s != slot || m == anchor {
                    continue;
                }
                let generation = self.generation(m);
                let on_m = routes.sessions.iter().find_map(|(&h, r)| {
                    if r.anchor == m && r.anchor_generation == generation {
                        return Some(h);
                    }
                    match r.backing[m] {
                        Some((g, b)) if g == generation => Some(b),
                        _ => None,
                    }
                });
                if let Some(h) = on_m {
                    logout.push((m, h));
                }
            }
            forget_slot(&mut routes, slot);
        }
        for (m, h) in logout {
            let _ = self.call_on(m, RequestBody::Logout { session: h });
        }
    }

    /// Asks the anchor once per key how to find it on the replicas.
    fn learn_key(&self, session: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) {
        let Some(anchor) = self.routes().sessions.get(&session).map(|r| r.anchor) else {
            return;
        };
        if self.routes().identities.contains_key(&(anchor, key)) {
            return;
        }
        let types = vec![
            CKA_UNIQUE_ID,
            CKA_CLASS,
            CKA_ID,
            CKA_KEY_TYPE,
            CKA_TOKEN,
            CKA_ALWAYS_AUTHENTICATE,
        ];
        let request = RequestBody::GetAttributes {
            session,
            object: key,
            types: types.clone(),
        };
        let answers = match self.call_on(anchor, request) {
            Ok(ReplyBody::Attributes(a)) if a.len() == types.len() => a,
            // Not learnt: this key is signed on its anchor only.
            _ => return,
        };
        let value = |i: usize| match &answers[i] {
            AttributeValue::Value(v) => Some(v.clone()),
            _ => None,
        };
        let flag = |i: usize| value(i).and_then(|v| attr::read_bool(&v));
        let attribute = |ty, value| Attribute { ty, value };
        // Session objects live on their anchor only, and a key that needs
        // a context-specific login per signature is signed where that
        // login was given.
        let identity = if flag(4) != Some(true) || flag(5) == Some(true) {
            None
        } else {
            match (value(0), value(1), value(2), value(3)) {
                (Some(unique), ..) => Some(vec![attribute(CKA_UNIQUE_ID, unique)]),
                (None, Some(class), Some(id), Some(key_type)) => Some(vec![
                    attribute(CKA_CLASS, class),
                    attribute(CKA_ID, id),
                    attribute(CKA_KEY_TYPE, key_type),
                ]),
                _ => None,
            }
        };
        self.routes().identities.insert((anchor, key), identity);
    }

    /// Spreads a `Sign` request over the healthy members, round robin.
    fn sign(&self, body: RequestBody) -> Result<ReplyBody, Error> {
        let RequestBody::Sign {
            session,
            key,
            mechanism,
            scheme,
            input,
        } = body
        else {
            return self.call(body);
        };
        let n = self.members.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut last = Error::DaemonUnreachable;
        // The first round skips members whose login another thread is
        // replaying; should nobody else serve, the second round replays it
        // too rather than fail.
        for patient in [false, true] {
            for m in (first..n).chain(0..first) {
                if !self.available(m) {
                    continue;
                }
                let (sent_session, sent_key) = match self.target(m, session, key, patient) {
                    Ok(Target::AsIs) => (session, key),
                    Ok(Target::Backing(s, k)) => (s, k),
                    Ok(Target::Unusable) => continue,
                    Err(e) => {
                        if connection_failed(&e) {
                            self.mark_down(m);
                        } else if last == Error::DaemonUnreachable {
                            last = e;
                        }
                        continue;
                    }
                };
                let request = RequestBody::Sign {
                    session: sent_session,
                    key: sent_key,
                    mechanism,
                    scheme,
                    input: input.clone(),
                };
                match self.members[m].daemon.call_pipelined(request) {
                    Ok(reply) => {
                        self.mark_up(m);
                        return Ok(reply);
                    }
                    // Nothing was sent: the next member gets it.
                    Err(Error::DaemonUnreachable) => self.mark_down(m),
                    // Sent, and lost with the connection: the caller may
                    // retry.
                    Err(Error::Transport) => {
                        self.mark_down(m);
                        return Err(Error::Transport);
                    }
                    // A session or login the member lost without our
                    // noticing (it restarted between two calls): set up
                    // afresh next time, and the next member serves this one.
                    Err(e @ Error::Daemon(CKR_SESSION_HANDLE_INVALID))
                    | Err(e @ Error::Daemon(CKR_USER_NOT_LOGGED_IN))
                        if sent_session != session =>
                    {
                        self.forget_backing(m, session);
                        last = e;
                    }
                    Err(e @ Error::Daemon(CKR_SESSION_HANDLE_INVALID)) => {
                        self.anchor_lost(session);
                        last = e;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(last)
    }

    /// The anchor no longer knows `session` (it restarted): signing there
    /// goes through a backing session from now on.
    fn anchor_lost(&self, session: CK_SESSION_HANDLE) {
        if let Some(route) = self.routes().sessions.get_mut(&session) {
            route.anchor_generation = u64::MAX;
        }
    }

    /// Drops the backing session of `session` on member `m`, and the login
    /// there.
    fn forget_backing(&self, m: usize, session: CK_SESSION_HANDLE) {
        let mut routes = self.routes();
        let Some(route) = routes.sessions.get_mut(&session) else {
            return;
        };
        route.backing[m] = None;
        let slot = route.slot;
        routes.logins.remove(&(m, slot));
    }

    /// How member `m` signs for `session` with `key`: on the session itself
    /// when `m` is its anchor (of the same generation), else on a backing
    /// session, opened, logged in and the key found there when first
    /// needed. Calls on one module session are serialised by the caller,
    /// so the backing session of (`m`, `session`) is set up by one thread.
    fn target(
        &self,
        m: usize,
        session: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        patient: bool,
    ) -> Result<Target, Error> {
        let generation = self.generation(m);
        let (anchor, slot, flags, backing, identity) = {
            let routes = self.routes();
            let route = routes
                .sessions
                .get(&session)
                .ok_or(Error::SessionHandleInvalid(session))?;
            if route.anchor == m && route.anchor_generation == generation {
                return Ok(Target::AsIs);
            }
            let Some(Some(identity)) = routes.identities.get(&(route.anchor, key)) else {
                return Ok(Target::Unusable);
            };
            let backing = match route.backing[m] {
                Some((g, h)) if g == generation => Some(h),
                _ => None,
            };
            (
                route.anchor,
                route.slot,
                route.flags,
                backing,
                identity.clone(),
            )
        };
        let backing = match backing {
            Some(h) => h,
            None => {
                let body = RequestBody::OpenSession { slot, flags };
                let h = session_reply(self.call_on(m, body))?;
                let mut routes = self.routes();
                match routes.sessions.get_mut(&session) {
                    Some(route) => route.backing[m] = Some((generation, h)),
                    None => return Err(Error::SessionHandleInvalid(session)),
                }
                h
            }
        };
        if !self.ensure_login(m, generation, slot, backing, patient)? {
            return Ok(Target::Unusable);
        }
        let cached = self
            .routes()
            .replica_keys
            .get(&(m, generation, anchor, key))
            .copied();
        let replica_key = match cached {
            Some(k) => k,
            None => {
                let body = RequestBody::FindObjects {
                    session: backing,
                    template: identity,
                };
                let found = match self.call_on(m, body)? {
                    ReplyBody::Objects(objects) if objects.len() == 1 => Some(objects[0]),
                    ReplyBody::Objects(_) => None,
                    _ => return Err(Error::Transport),
                };
                self.routes()
                    .replica_keys
                    .insert((m, generation, anchor, key), found);
                found
            }
        };
        Ok(match replica_key {
            Some(k) => Target::Backing(backing, k),
            None => Target::Unusable,
        })
    }

    /// Replays the user login on member `m` once per generation; false when
    /// there is no PIN to replay or the member refused it.
    ///
    /// While one thread replays it (the daemon spends a while on the PIN
    /// hash), the others find the member unusable and sign elsewhere rather
    /// than queue up behind it; a `patient` caller, which has nowhere else
    /// to go, replays it as well.
    fn ensure_login(
        &self,
        m: usize,
        generation: u64,
        slot: CK_SLOT_ID,
        backing: CK_SESSION_HANDLE,
        patient: bool,
    ) -> Result<bool, Error> {
        let pin = {
            let mut routes = self.routes();
            match routes.logins.get(&(m, slot)) {
                Some(&(g, Login::Holds)) if g == generation => return Ok(true),
                Some(&(g, Login::Refused)) if g == generation => return Ok(false),
                Some(&(g, Login::Pending)) if g == generation && !patient => return Ok(false),
                _ => {}
            }
            let Some(pin) = routes.pins.get(&slot).cloned() else {
                return Ok(false);
            };
            routes
                .logins
                .insert((m, slot), (generation, Login::Pending));
            pin
        };
        let body = RequestBody::Login {
            session: backing,
            user_type: CKU_USER,
            pin: pin.to_vec(),
        };
        let result = self.call_on(m, body);
        let mut routes = self.routes();
        let state = match result {
            Ok(_) | Err(Error::Daemon(CKR_USER_ALREADY_LOGGED_IN)) => Login::Holds,
            Err(e) if connection_failed(&e) => {
                routes.logins.remove(&(m, slot));
                return Err(e);
            }
            Err(_) => Login::Refused,
        };
        // A logout or a last session closed meanwhile forgot the slot.
        if routes.pins.contains_key(&slot) {
            routes.logins.insert((m, slot), (generation, state));
        }
        Ok(state == Login::Holds)
    }
}

/// Forgets the PIN and logins of `slot` (logout, or its last session closed).
fn forget_slot(routes: &mut Routes, slot: CK_SLOT_ID) {
    routes.pins.remove(&slot);
    routes.logins.retain(|&(_, s), _| s != slot);
}

/// The session a request names, for routing it to the session's anchor.
/// Requests not listed here go to the first healthy daemon, which is the
/// anchor of every session opened while it was up.
fn session_of(body: &RequestBody) -> Option<CK_SESSION_HANDLE> {
    use RequestBody::*;
    match body {
        InitPin { session, .. }
        | SetPin { session, .. }
        | CloseSession { session }
        | SessionInfo { session }
        | Login { session, .. }
        | Logout { session }
        | CreateObject { session, .. }
        | CopyObject { session, .. }
        | DestroyObject { session, .. }
        | ObjectSize { session, .. }
        | GetAttributes { session, .. }
        | SetAttributes { session, .. }
        | FindObjects { session, .. }
        | GenerateKeyPair { session, .. }
        | Sign { session, .. }
        | GenerateRandom { session, .. }
        | CheckSession { session }
        | DropContextLogin { session }
        | Decrypt { session, .. }
        | GenerateKey { session, .. }
        | SecretEncrypt { session, .. }
        | SecretDecrypt { session, .. }
        | MacSign { session, .. }
        | MacVerify { session, .. }
        | DomainCreate { session, .. }
        | DomainJoin { session, .. }
        | BackupExport { session }
        | BackupImport { session, .. }
        | DeriveKey { session, .. }
        | WrapKey { session, .. }
        | UnwrapKey { session, .. } => Some(*session),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesign_proto::SignScheme;
    use mesign_proto::{decode_frame_body, read_frame, write_frame, Reply, ReplyResult, Request};
    use std::os::unix::net::UnixListener;
    use std::sync::Arc;

    /// A fake daemon answering every connection with `answer`, and keeping
    /// the requests it saw (but Hello).
    fn fake(
        dir: &std::path::Path,
        name: &str,
        answer: fn(&RequestBody) -> ReplyResult,
    ) -> (std::path::PathBuf, Arc<Mutex<Vec<RequestBody>>>) {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (mut s, log) = (stream.unwrap(), Arc::clone(&log));
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    while let Ok(n) = read_frame(&mut s, &mut buf) {
                        let req: Request = decode_frame_body(&buf[..n]).unwrap();
                        let result = match req.body {
                            RequestBody::Hello { .. } => ReplyResult::Ok(ReplyBody::Hello {
                                daemon_version: "t".into(),
                            }),
                            ref other => {
                                log.lock().unwrap().push(other.clone());
                                answer(other)
                            }
                        };
                        let reply = Reply { id: req.id, result };
                        write_frame(&mut s, &reply, &mut Vec::new()).unwrap();
                    }
                });
            }
        });
        (path, seen)
    }

    /// A daemon holding one token key, handle `key`, with sessions
    /// numbered from `sessions`; `unique` is its CKA_UNIQUE_ID, if it has
    /// the attribute, and `login` its answer to a login.
    macro_rules! replica {
        ($sessions:expr, $key:expr, $name:expr) => {
            replica!(
                $sessions,
                $key,
                $name,
                None::<&[u8]>,
                ReplyResult::Ok(ReplyBody::Done)
            )
        };
        ($sessions:expr, $key:expr, $name:expr, $unique:expr, $login:expr) => {
            |body: &RequestBody| {
                ReplyResult::Ok(match body {
                    RequestBody::OpenSession { .. } => ReplyBody::Session($sessions),
                    RequestBody::Login { .. } => return $login,
                    RequestBody::GetAttributes { types, .. } => ReplyBody::Attributes(
                        types
                            .iter()
                            .map(|&t| match t {
                                CKA_UNIQUE_ID => match $unique {
                                    Some(u) => AttributeValue::Value(u.to_vec()),
                                    None => AttributeValue::Invalid,
                                },
                                CKA_TOKEN => AttributeValue::Value(vec![1]),
                                CKA_ALWAYS_AUTHENTICATE => AttributeValue::Value(vec![0]),
                                _ => AttributeValue::Value(t.to_le_bytes().to_vec()),
                            })
                            .collect(),
                    ),
                    RequestBody::FindObjects { .. } => ReplyBody::Objects(vec![$key]),
                    RequestBody::Sign { .. } => ReplyBody::Bytes($name.to_vec()),
                    _ => ReplyBody::Done,
                })
            }
        };
    }

    fn sign_request(session: u64, key: u64) -> RequestBody {
        RequestBody::Sign {
            session,
            key,
            mechanism: CKM_ECDSA,
            scheme: SignScheme::Ecdsa,
            input: vec![1; 32],
        }
    }

    #[test]
    fn signatures_are_spread_and_replayed_on_backing_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = fake(dir.path(), "a", replica!(100, 5, b"A"));
        let (b, on_b) = fake(dir.path(), "b", replica!(200, 7, b"B"));
        let r = Replicas::new(vec![Daemon::unix(a, 1), Daemon::unix(b, 1)]);
        let session = r.open_session(0, CKF_SERIAL_SESSION).unwrap();
        assert_eq!(session, 100, "anchored on the first daemon");
        r.logged_in(session, CKU_USER, b"1234");
        r.learn_key(session, 5);
        let mut served = Vec::new();
        for _ in 0..4 {
            match r.sign(sign_request(session, 5)).unwrap() {
                ReplyBody::Bytes(who) => served.push(who),
                other => panic!("{other:?}"),
            }
        }
        served.sort();
        assert_eq!(served, [b"A", b"A", b"B", b"B"]);
        // B got a backing session, the login replayed once, the key found
        // by (class, id, key type), and its own handles in the requests.
        let seen = on_b.lock().unwrap().clone();
        assert!(matches!(seen[0], RequestBody::OpenSession { slot: 0, .. }));
        assert!(
            matches!(&seen[1], RequestBody::Login { session: 200, user_type: CKU_USER, pin } if pin == b"1234")
        );
        let RequestBody::FindObjects {
            session: 200,
            template,
        } = &seen[2]
        else {
            panic!("{:?}", seen[2]);
        };
        let types: Vec<u64> = template.iter().map(|a| a.ty).collect();
        assert_eq!(types, [CKA_CLASS, CKA_ID, CKA_KEY_TYPE]);
        assert_eq!(seen[3], sign_request(200, 7));
        assert_eq!(seen[4], sign_request(200, 7));
        assert_eq!(seen.len(), 5);
        // After C_Logout the PIN is gone and B is logged out.
        r.logged_out(session);
        assert!(r.routes().pins.is_empty());
        assert_eq!(
            on_b.lock().unwrap().last(),
            Some(&RequestBody::Logout { session: 200 })
        );
    }

    #[test]
    fn a_daemon_down_from_the_start_is_skipped_and_retried_later() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = fake(dir.path(), "b", replica!(200, 7, b"B"));
        let r = Replicas::new(vec![
            Daemon::unix(dir.path().join("nobody"), 1),
            Daemon::unix(b, 1),
        ]);
        let session = r.open_session(0, CKF_SERIAL_SESSION).unwrap();
        assert_eq!(session, 200, "anchored on the second daemon");
        assert!(r.members[0].down.load(Ordering::Acquire));
        assert_eq!(r.generation(0), 1);
        // Resting: not tried, and a second failure bumps no generation.
        assert!(!r.available(0));
        r.mark_down(0);
        assert_eq!(r.generation(0), 1);
        // Once due, exactly one caller tries it.
        r.members[0].retry_at.store(0, Ordering::Release);
        assert!(r.available(0));
        assert!(!r.available(0));
        r.learn_key(session, 7);
        for _ in 0..3 {
            assert_eq!(
                r.sign(sign_request(session, 7)),
                Ok(ReplyBody::Bytes(b"B".to_vec()))
            );
        }
    }

    fn signer(r: &Replicas, session: u64, key: u64) -> Vec<u8> {
        match r.sign(sign_request(session, key)).unwrap() {
            ReplyBody::Bytes(who) => who,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_are_found_by_unique_id_where_the_daemons_have_it() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = fake(
            dir.path(),
            "a",
            replica!(100, 5, b"A", Some(b"u-1"), ReplyResult::Ok(ReplyBody::Done)),
        );
        let (b, on_b) = fake(
            dir.path(),
            "b",
            replica!(200, 7, b"B", Some(b"u-1"), ReplyResult::Ok(ReplyBody::Done)),
        );
        let r = Replicas::new(vec![Daemon::unix(a, 1), Daemon::unix(b, 1)]);
        let session = r.open_session(0, CKF_SERIAL_SESSION).unwrap();
        r.logged_in(session, CKU_USER, b"1234");
        r.learn_key(session, 5);
        let mut served: Vec<_> = (0..2).map(|_| signer(&r, session, 5)).collect();
        served.sort();
        assert_eq!(served, [b"A", b"B"]);
        let seen = on_b.lock().unwrap().clone();
        let template = seen.iter().find_map(|body| match body {
            RequestBody::FindObjects { template, .. } => Some(template.clone()),
            _ => None,
        });
        let unique = Attribute {
            ty: CKA_UNIQUE_ID,
            value: b"u-1".to_vec(),
        };
        assert_eq!(template, Some(vec![unique]));
    }

    /// A replica with another PIN is asked once per C_Login, never again in
    /// between: the module must not use up its PIN attempts.
    #[test]
    fn a_refused_login_is_not_replayed_until_the_next_login() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = fake(dir.path(), "a", replica!(100, 5, b"A"));
        let (b, on_b) = fake(
            dir.path(),
            "b",
            replica!(
                200,
                7,
                b"B",
                None::<&[u8]>,
                ReplyResult::Err(CKR_PIN_INCORRECT)
            ),
        );
        let r = Replicas::new(vec![Daemon::unix(a, 1), Daemon::unix(b, 1)]);
        let session = r.open_session(0, CKF_SERIAL_SESSION).unwrap();
        r.logged_in(session, CKU_USER, b"1234");
        r.learn_key(session, 5);
        let logins = || {
            let seen = on_b.lock().unwrap();
            seen.iter()
                .filter(|b| matches!(b, RequestBody::Login { .. }))
                .count()
        };
        for _ in 0..6 {
            assert_eq!(signer(&r, session, 5), b"A");
        }
        assert_eq!(logins(), 1);
        r.logged_in(session, CKU_USER, b"1234");
        for _ in 0..6 {
            assert_eq!(signer(&r, session, 5), b"A");
        }
        assert_eq!(logins(), 2);
    }

    #[test]
    fn a_destroyed_key_is_looked_up_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = fake(dir.path(), "a", replica!(100, 5, b"A"));
        let (b, on_b) = fake(dir.path(), "b", replica!(200, 7, b"B"));
        let r = Replicas::new(vec![Daemon::unix(a, 1), Daemon::unix(b, 1)]);
        let session = r.open_session(0, CKF_SERIAL_SESSION).unwrap();
        r.logged_in(session, CKU_USER, b"1234");
        r.learn_key(session, 5);
        signer(&r, session, 5);
        signer(&r, session, 5);
        assert_eq!(r.routes().replica_keys.len(), 1);
        let destroy = RequestBody::DestroyObject { session, object: 5 };
        assert_eq!(r.call(destroy), Ok(ReplyBody::Done));
        assert!(r.routes().identities.is_empty());
        assert!(r.routes().replica_keys.is_empty());
        // Not learnt again: signed on the anchor only.
        for _ in 0..4 {
            assert_eq!(signer(&r, session, 5), b"A");
        }
        let finds = on_b
            .lock()
            .unwrap()
            .iter()
            .filter(|b| matches!(b, RequestBody::FindObjects { .. }))
            .count();
        assert_eq!(finds, 1);
    }

    #[test]
    fn requests_are_routed_by_the_session_they_name() {
        assert_eq!(session_of(&sign_request(9, 1)), Some(9));
        assert_eq!(session_of(&RequestBody::Logout { session: 4 }), Some(4));
        assert_eq!(session_of(&RequestBody::Slots), None);
        assert_eq!(session_of(&RequestBody::TokenInfo { slot: 0 }), None);
    }
}
