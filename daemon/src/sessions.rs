//! Applications, their sessions and their login state.
//!
//! An application is one (peer process id, module-chosen number) pair. Its
//! login state per slot is shared by all its sessions and connections and
//! ends when its last connection closes or when it closes its last session
//! on the slot (PKCS#11 2.40 §5.6: closing all sessions logs out).
//!
//! Every login gets a fresh generation number, which the handles of
//! private objects carry (see [`crate::objects::handle`]): a handle obtained
//! before a C_Logout stays invalid after the next C_Login (PKCS#11 2.40
//! §5.6), while the object itself is found again under a new handle.
//!
//! A session may also hold one context-specific authorisation
//! (CKU_CONTEXT_SPECIFIC): granted by a correct user PIN, consumed by the
//! next use of a CKA_ALWAYS_AUTHENTICATE key, dropped at logout and when the
//! module reports that the operation it was granted for ended without one.

use std::collections::HashMap;

use cryptoki_sys::*;

use crate::error::HsmError;
use crate::objects::LOGIN_GENERATIONS;

/// Names an application: the peer's process id and the number its module
/// picked at C_Initialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppKey {
    pub pid: i32,
    pub app: u64,
}

/// Who an application is logged in as on a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    So,
    User,
}

/// One open session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub app: AppKey,
    pub slot: u64,
    pub rw: bool,
    /// A context-specific login not yet used.
    pub context_login: bool,
}

/// A session as a request sees it: where it is and who is logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionView {
    pub handle: u64,
    pub app: AppKey,
    pub slot: u64,
    pub rw: bool,
    pub login: Option<Login>,
    /// The current login's generation; 0 while nobody is logged in.
    pub generation: u64,
}

impl SessionView {
    /// The CKS_* state of PKCS#11 2.40 §5.6.
    pub fn state(&self) -> u64 {
        match (self.rw, self.login) {
            (false, None) => CKS_RO_PUBLIC_SESSION,
            (false, Some(_)) => CKS_RO_USER_FUNCTIONS,
            (true, None) => CKS_RW_PUBLIC_SESSION,
            (true, Some(Login::User)) => CKS_RW_USER_FUNCTIONS,
            (true, Some(Login::So)) => CKS_RW_SO_FUNCTIONS,
        }
    }

    /// True if private objects are visible in this session.
    pub fn user(&self) -> bool {
        self.login == Some(Login::User)
    }
}

/// One login of an application on a slot.
#[derive(Debug, Clone, Copy)]
struct LoginState {
    who: Login,
    generation: u64,
}

#[derive(Debug, Default)]
struct App {
    connections: usize,
    logins: HashMap<u64, LoginState>,
}

/// Every application and session.
#[derive(Debug)]
pub struct Apps {
    apps: HashMap<AppKey, App>,
    sessions: HashMap<u64, Session>,
    next_session: u64,
    /// Logins so far, over all applications: generations are daemon-wide
    /// so that an application that reconnects under the same key never
    /// meets its old generation again (until the counter wraps).
    logins_so_far: u64,
}

impl Default for Apps {
    fn default() -> Self {
        let offset = start_offset();
        Apps {
            apps: HashMap::new(),
            sessions: HashMap::new(),
            next_session: 1 + offset,
            logins_so_far: offset,
        }
    }
}

/// Where a daemon start begins numbering sessions and logins: a random
/// offset below 2^31, so that a host's session handle or private object
/// handle from before a restart does not name something new (session
/// handles stay within 32 bits, for hosts that keep them in an `int`).
/// Fuzzing builds start at 0 so that committed seeds keep naming their
/// sessions.
fn start_offset() -> u64 {
    if cfg!(feature = "fuzzing") {
        return 0;
    }
    use std::hash::{BuildHasher, Hasher};
    // The standard library keys every RandomState from the OS's random
    // source; this needs no secrecy, only a different start each time.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    random % (1 << 31)
}

impl Apps {
    /// Registers a connection of `app`.
    pub fn connect(&mut self, app: AppKey) {
        self.apps.entry(app).or_default().connections += 1;
    }

    /// Unregisters a connection; when it was the application's last, the
    /// application ends and the handles of its sessions are returned (with
    /// their slots) so their objects can be destroyed.
    pub fn disconnect(&mut self, app: AppKey) -> Vec<(u64, u64)> {
        let Some(entry) = self.apps.get_mut(&app) else {
            return Vec::new();
        };
        entry.connections = entry.connections.saturating_sub(1);
        if entry.connections > 0 {
            return Vec::new();
        }
        self.apps.remove(&app);
        let closed: Vec<(u64, u64)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.app == app)
            .map(|(&h, s)| (h, s.slot))
            .collect();
        for (h, _) in &closed {
            self.sessions.remove(h);
        }
        closed
    }

    /// The session `handle` if it belongs to `app`.
    pub fn view(&self, app: AppKey, handle: u64) -> Result<SessionView, HsmError> {
        let s = self
            .sessions
            .get(&handle)
            .filter(|s| s.app == app)
            .ok_or(HsmError::SessionHandleInvalid(handle))?;
        let login = self.login_state(app, s.slot);
        Ok(SessionView {
            handle,
            app,
            slot: s.slot,
            rw: s.rw,
            login: login.map(|l| l.who),
            generation: login.map_or(0, |l| l.generation),
        })
    }

    /// Who `app` is logged in as on `slot`.
    pub fn login(&self, app: AppKey, slot: u64) -> Option<Login> {
        self.login_state(app, slot).map(|l| l.who)
    }

    fn login_state(&self, app: AppKey, slot: u64) -> Option<LoginState> {
        self.apps
            .get(&app)
            .and_then(|a| a.logins.get(&slot).copied())
    }

    /// Opens a session; the caller has checked the slot and the token.
    pub fn open(&mut self, app: AppKey, slot: u64, rw: bool) -> Result<u64, HsmError> {
        if !rw && self.login(app, slot) == Some(Login::So) {
            return Err(HsmError::SessionReadWriteSoExists);
        }
        let handle = self.next_session;
        self.next_session += 1;
        self.apps.entry(app).or_default();
        self.sessions.insert(
            handle,
            Session {
                app,
                slot,
                rw,
                context_login: false,
            },
        );
        Ok(handle)
    }

    /// Closes one session of `app`; ends the app's login on the slot if it
    /// was its last session there.
    pub fn close(&mut self, app: AppKey, handle: u64) -> Result<Session, HsmError> {
        let session = self.view(app, handle)?;
        let removed = self.sessions.remove(&handle).expect("view found it");
        if !self
            .sessions
            .values()
            .any(|s| s.app == app && s.slot == session.slot)
        {
            if let Some(a) = self.apps.get_mut(&app) {
                a.logins.remove(&session.slot);
            }
        }
        Ok(removed)
    }

    /// Handles of `app`'s sessions on `slot`.
    pub fn sessions_of(&self, app: AppKey, slot: u64) -> Vec<u64> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.app == app && s.slot == slot)
            .map(|(&h, _)| h)
            .collect()
    }

    /// (all, read-write) session counts on `slot`, over every application.
    pub fn counts(&self, slot: u64) -> (u64, u64) {
        let on_slot = self.sessions.values().filter(|s| s.slot == slot);
        let (mut all, mut rw) = (0, 0);
        for s in on_slot {
            all += 1;
            rw += u64::from(s.rw);
        }
        (all, rw)
    }

    /// Checks that `app` may log in as `who` on the session's slot.
    pub fn check_login(&self, view: &SessionView, who: Login) -> Result<(), HsmError> {
        match view.login {
            Some(current) if current == who => return Err(HsmError::UserAlreadyLoggedIn),
            Some(_) => return Err(HsmError::UserAnotherAlreadyLoggedIn),
            None => {}
        }
        let read_only_exists = self
            .sessions
            .values()
            .any(|s| s.app == view.app && s.slot == view.slot && !s.rw);
        if who == Login::So && read_only_exists {
            return Err(HsmError::SessionReadOnlyExists);
        }
        Ok(())
    }

    /// Records a login (if the application still exists) under a new
    /// generation, never 0.
    pub fn set_login(&mut self, app: AppKey, slot: u64, who: Login) {
        if let Some(a) = self.apps.get_mut(&app) {
            let generation = 1 + self.logins_so_far % (LOGIN_GENERATIONS - 1);
            self.logins_so_far += 1;
            a.logins.insert(slot, LoginState { who, generation });
        }
    }

    /// Ends a login, and with it every unused context-specific login of
    /// the application's sessions on the slot; `UserNotLoggedIn` if there
    /// was none.
    pub fn logout(&mut self, app: AppKey, slot: u64) -> Result<(), HsmError> {
        self.apps
            .get_mut(&app)
            .and_then(|a| a.logins.remove(&slot))
            .ok_or(HsmError::UserNotLoggedIn)?;
        for s in self.sessions.values_mut() {
            if s.app == app && s.slot == slot {
                s.context_login = false;
            }
        }
        Ok(())
    }

    /// Records a context-specific login on one session of `app`.
    pub fn grant_context_login(&mut self, app: AppKey, handle: u64) -> Result<(), HsmError> {
        self.view(app, handle)?;
        if let Some(s) = self.sessions.get_mut(&handle) {
            s.context_login = true;
        }
        Ok(())
    }

    /// Consumes the session's context-specific login; true if it had one.
    /// Also how an unused one is dropped when its operation ended.
    pub fn take_context_login(&mut self, app: AppKey, handle: u64) -> bool {
        self.sessions
            .get_mut(&handle)
            .filter(|s| s.app == app)
            .is_some_and(|s| std::mem::take(&mut s.context_login))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AppKey = AppKey { pid: 10, app: 1 };
    const B: AppKey = AppKey { pid: 10, app: 2 };

    #[test]
    fn sessions_belong_to_their_application() {
        let mut apps = Apps::default();
        apps.connect(A);
        apps.connect(B);
        let s = apps.open(A, 0, true).unwrap();
        assert!(apps.view(A, s).is_ok());
        assert_eq!(
            apps.view(B, s).unwrap_err().rv(),
            CKR_SESSION_HANDLE_INVALID
        );
        assert_eq!(
            apps.close(B, s).unwrap_err().rv(),
            CKR_SESSION_HANDLE_INVALID
        );
        assert!(apps.close(A, s).is_ok());
        assert_eq!(
            apps.view(A, s).unwrap_err().rv(),
            CKR_SESSION_HANDLE_INVALID
        );
        let s2 = apps.open(A, 0, true).unwrap();
        assert!(s2 > s, "handles are not reused");
    }

    #[test]
    fn login_is_shared_by_sessions_and_ends_with_the_last_one() {
        let mut apps = Apps::default();
        apps.connect(A);
        let ro = apps.open(A, 0, false).unwrap();
        let rw = apps.open(A, 0, true).unwrap();
        let view = apps.view(A, rw).unwrap();
        assert_eq!(
            apps.check_login(&view, Login::So).unwrap_err().rv(),
            CKR_SESSION_READ_ONLY_EXISTS
        );
        apps.check_login(&view, Login::User).unwrap();
        apps.set_login(A, 0, Login::User);
        assert_eq!(apps.view(A, ro).unwrap().state(), CKS_RO_USER_FUNCTIONS);
        assert_eq!(apps.view(A, rw).unwrap().state(), CKS_RW_USER_FUNCTIONS);
        let view = apps.view(A, rw).unwrap();
        assert_eq!(
            apps.check_login(&view, Login::User).unwrap_err().rv(),
            CKR_USER_ALREADY_LOGGED_IN
        );
        assert_eq!(
            apps.check_login(&view, Login::So).unwrap_err().rv(),
            CKR_USER_ANOTHER_ALREADY_LOGGED_IN
        );
        apps.close(A, ro).unwrap();
        assert!(apps.view(A, rw).unwrap().user());
        apps.close(A, rw).unwrap();
        assert_eq!(apps.login(A, 0), None);
        assert_eq!(apps.logout(A, 0).unwrap_err().rv(), CKR_USER_NOT_LOGGED_IN);
    }

    #[test]
    fn context_login_is_per_session_used_once_and_ends_at_logout() {
        let mut apps = Apps::default();
        apps.connect(A);
        apps.connect(B);
        let s = apps.open(A, 0, true).unwrap();
        let t = apps.open(A, 0, true).unwrap();
        assert_eq!(
            apps.grant_context_login(B, s).unwrap_err().rv(),
            CKR_SESSION_HANDLE_INVALID
        );
        apps.set_login(A, 0, Login::User);
        apps.grant_context_login(A, s).unwrap();
        assert!(!apps.take_context_login(A, t), "only the granted session");
        assert!(!apps.take_context_login(B, s), "only its own application");
        assert!(apps.take_context_login(A, s));
        assert!(!apps.take_context_login(A, s), "used once");
        apps.grant_context_login(A, s).unwrap();
        apps.logout(A, 0).unwrap();
        assert!(!apps.take_context_login(A, s), "logout drops it");
    }

    #[test]
    fn every_login_has_a_generation_of_its_own() {
        let mut apps = Apps::default();
        apps.connect(A);
        apps.connect(B);
        let s = apps.open(A, 0, true).unwrap();
        let t = apps.open(B, 0, true).unwrap();
        assert_eq!(apps.view(A, s).unwrap().generation, 0, "not logged in");
        let mut seen = Vec::new();
        for _ in 0..3 {
            apps.set_login(A, 0, Login::User);
            apps.set_login(B, 0, Login::User);
            let (mine, theirs) = (apps.view(A, s).unwrap(), apps.view(B, t).unwrap());
            assert!(mine.generation != 0 && mine.generation != theirs.generation);
            assert!(
                !seen.contains(&mine.generation),
                "a login's generation came back"
            );
            seen.push(mine.generation);
            apps.logout(A, 0).unwrap();
            apps.logout(B, 0).unwrap();
            assert_eq!(apps.view(A, s).unwrap().generation, 0);
        }
        // Ending the login by closing the last session ends its generation too.
        apps.set_login(A, 0, Login::User);
        seen.push(apps.view(A, s).unwrap().generation);
        apps.close(A, s).unwrap();
        let s = apps.open(A, 0, true).unwrap();
        apps.set_login(A, 0, Login::User);
        assert!(!seen.contains(&apps.view(A, s).unwrap().generation));
    }

    #[test]
    fn so_login_forbids_read_only_sessions_and_last_connection_ends_all() {
        let mut apps = Apps::default();
        apps.connect(A);
        apps.connect(A);
        let rw = apps.open(A, 0, true).unwrap();
        apps.set_login(A, 0, Login::So);
        assert_eq!(apps.view(A, rw).unwrap().state(), CKS_RW_SO_FUNCTIONS);
        assert_eq!(
            apps.open(A, 0, false).unwrap_err().rv(),
            CKR_SESSION_READ_WRITE_SO_EXISTS
        );
        assert!(
            apps.disconnect(A).is_empty(),
            "one connection is still open"
        );
        assert_eq!(apps.disconnect(A), vec![(rw, 0)]);
        assert_eq!(apps.counts(0), (0, 0));
        assert_eq!(apps.login(A, 0), None);
    }
}
