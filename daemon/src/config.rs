//! Daemon settings: a TOML file, overridden by command-line flags.
//!
//! Unknown keys are refused so that a misspelt setting is an error at start
//! rather than a silently ignored line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hsm::PinPolicy;

/// The settings file as written by the operator.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket file (e.g. `0o660`).
    pub socket_mode: Option<u32>,
    pub allowed_uids: Option<Vec<u32>>,
    pub allowed_gids: Option<Vec<u32>>,
    /// Group names whose members may connect, by primary or supplementary
    /// membership; resolved to gids at start (an unknown name is an error).
    pub allowed_groups: Option<Vec<String>>,
    pub cards: Option<Vec<CardConfig>>,
    pub max_pin_attempts: Option<u32>,
    pub min_pin_len: Option<usize>,
    pub max_pin_len: Option<usize>,
    /// A tracing filter ("info", "mesign_hsmd=debug"); RUST_LOG wins.
    pub log: Option<String>,
    /// Most client connections served at once (default 1024); further
    /// connections are closed at once and logged. Each connection costs a
    /// thread, so this bounds what a misbehaving client can take.
    pub max_connections: Option<usize>,
    /// Seconds a new connection may take to send its first frame (Hello)
    /// before it is closed (default 10; 0 = no limit).
    pub hello_timeout_secs: Option<u64>,
    /// Seconds a connection may stay silent after Hello before it is closed
    /// (default 0 = never). Off by default because closing an
    /// application's last connection ends its sessions and login, and
    /// signing servers legitimately keep sessions open idle for hours.
    pub idle_timeout_secs: Option<u64>,
    /// Seconds a reply may wait for a client that does not read before the
    /// connection is closed (default 30; 0 = never).
    pub write_timeout_secs: Option<u64>,
    /// The mutual-TLS listener for remote signing servers and peer boxes.
    pub tls: Option<TlsConfig>,
    /// Keeping token objects in step with other boxes of the domain.
    pub replication: Option<ReplicationConfig>,
}

/// `[tls]`: certificates issued by `mesign-hsm domain tls-cert`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `host:port` to listen on; no listener when absent (the certificate
    /// still serves replication to peers).
    pub listen: Option<String>,
    /// PEM: this box's certificate (chain).
    pub cert: PathBuf,
    /// PEM PKCS#8: its private key.
    pub key: PathBuf,
    /// PEM: the domain CA, the only trust anchor.
    pub ca: PathBuf,
    /// How many TLS connections may be in their handshake at once (default
    /// [`DEFAULT_HANDSHAKE_LIMIT`]); they take a `max_connections` place
    /// only once their certificate is verified.
    #[serde(default = "default_handshake_limit")]
    pub handshake_limit: usize,
}

/// The default `[tls] handshake_limit`.
pub const DEFAULT_HANDSHAKE_LIMIT: usize = 64;

fn default_handshake_limit() -> usize {
    DEFAULT_HANDSHAKE_LIMIT
}

/// `[replication]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// The other boxes, `host:port` of their TLS listeners.
    pub peers: Vec<String>,
    /// When a change is acknowledged (default async).
    #[serde(default)]
    pub mode: ReplicationMode,
}

/// When a replicated change is acknowledged to the application.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// At once; peers receive it in the background (and on reconnect).
    #[default]
    Async,
    /// Only after every peer applied it; if one cannot, the call fails
    /// with CKR_DEVICE_ERROR and the change is not made.
    Both,
}

/// One card.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CardConfig {
    /// The software emulator: spawned as a child with `state_dir`
    /// (default `<state_dir>/cardN`), or reached at `socket` if it runs
    /// already.
    Emulator {
        state_dir: Option<PathBuf>,
        socket: Option<PathBuf>,
        /// The `mesign-card-emu` executable (default: beside the daemon).
        exe: Option<PathBuf>,
        /// How many emulated cards back this slot (default 1, at most
        /// [`MAX_CARD_INSTANCES`]; spawned emulators only). They share the
        /// state directory and so the master key, as the cards of one
        /// cloning domain do, and the daemon spreads signing across them.
        instances: Option<u32>,
    },
}

/// Most emulated cards behind one slot.
pub const MAX_CARD_INSTANCES: u32 = 8;

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    pub cards: Vec<CardConfig>,
    pub pins: PinPolicy,
    pub log: String,
    pub limits: Limits,
    pub tls: Option<TlsConfig>,
    pub replication: Option<ReplicationConfig>,
}

/// Connection limits (see the matching [`FileConfig`] keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    /// `None`: no limit.
    pub hello_timeout: Option<std::time::Duration>,
    /// `None`: no limit.
    pub idle_timeout: Option<std::time::Duration>,
    /// `None`: no limit.
    pub write_timeout: Option<std::time::Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            hello_timeout: Some(std::time::Duration::from_secs(10)),
            idle_timeout: None,
            write_timeout: Some(std::time::Duration::from_secs(30)),
        }
    }
}

fn seconds(
    value: Option<u64>,
    default: Option<std::time::Duration>,
) -> Option<std::time::Duration> {
    match value {
        None => default,
        Some(0) => None,
        Some(s) => Some(std::time::Duration::from_secs(s)),
    }
}

/// Why the configuration could not be assembled.
#[derive(Debug)]
pub enum ConfigError {
    Usage(String),
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    Missing(&'static str),
    Invalid {
        setting: &'static str,
        reason: &'static str,
    },
    /// A group named in `allowed_groups` does not exist.
    UnknownGroup(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Usage(msg) => write!(f, "{msg}\n{USAGE}"),
            ConfigError::UnknownGroup(name) => {
                write!(f, "allowed_groups: there is no group named {name:?}")
            }
            ConfigError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            ConfigError::Parse { path, source } => {
                write!(f, "invalid config file {}: {source}", path.display())
            }
            ConfigError::Missing(what) => {
                write!(f, "no {what} given (flag or config file)\n{USAGE}")
            }
            ConfigError::Invalid { setting, reason } => write!(f, "invalid {setting}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

pub const USAGE: &str = "usage: mesign-hsmd --state-dir DIR --socket PATH [--config FILE] [--card-emulator-socket PATH]";

/// Command-line flags.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub card_emulator_socket: Option<PathBuf>,
    pub help: bool,
}

/// Parses the arguments after the program name.
pub fn parse_flags(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<Flags, ConfigError> {
    let mut flags = Flags::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_string_lossy().into_owned();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(PathBuf::from(v))),
            None => (arg.clone(), None),
        };
        if name == "--help" || name == "-h" {
            flags.help = true;
            continue;
        }
        let slot = match name.as_str() {
            "--state-dir" => &mut flags.state_dir,
            "--socket" => &mut flags.socket,
            "--config" => &mut flags.config,
            "--card-emulator-socket" => &mut flags.card_emulator_socket,
            _ => return Err(ConfigError::Usage(format!("unknown argument {arg:?}"))),
        };
        let value = match inline {
            Some(v) => v,
            None => PathBuf::from(
                args.next()
                    .ok_or_else(|| ConfigError::Usage(format!("{name} needs a value")))?,
            ),
        };
        *slot = Some(value);
    }
    Ok(flags)
}

/// Reads a settings file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })
}

/// Combines the file (if any) and the flags; flags win. `own_uid` is the
/// daemon's uid, allowed by default together with root.
pub fn resolve(file: FileConfig, flags: &Flags, own_uid: u32) -> Result<Config, ConfigError> {
    let state_dir = flags
        .state_dir
        .clone()
        .or(file.state_dir)
        .ok_or(ConfigError::Missing("--state-dir"))?;
    let socket = flags
        .socket
        .clone()
        .or(file.socket)
        .ok_or(ConfigError::Missing("--socket"))?;
    let cards = match &flags.card_emulator_socket {
        Some(s) => vec![CardConfig::Emulator {
            state_dir: None,
            socket: Some(s.clone()),
            exe: None,
            instances: None,
        }],
        None => file.cards.unwrap_or_else(|| {
            vec![CardConfig::Emulator {
                state_dir: None,
                socket: None,
                exe: None,
                instances: None,
            }]
        }),
    };
    if cards.is_empty() {
        return Err(ConfigError::Invalid {
            setting: "cards",
            reason: "at least one card is needed",
        });
    }
    for card in &cards {
        let CardConfig::Emulator {
            socket, instances, ..
        } = card;
        match instances {
            None => {}
            Some(n) if !(1..=MAX_CARD_INSTANCES).contains(n) => {
                return Err(ConfigError::Invalid {
                    setting: "instances",
                    reason: "must be between 1 and 8",
                })
            }
            Some(n) if *n > 1 && socket.is_some() => {
                return Err(ConfigError::Invalid {
                    setting: "instances",
                    reason: "only emulators the daemon spawns can have several instances",
                })
            }
            Some(_) => {}
        }
    }
    let defaults = PinPolicy::default();
    let pins = PinPolicy {
        max_attempts: file.max_pin_attempts.unwrap_or(defaults.max_attempts),
        min_len: file.min_pin_len.unwrap_or(defaults.min_len),
        max_len: file.max_pin_len.unwrap_or(defaults.max_len),
        iterations: defaults.iterations,
    };
    if pins.max_attempts == 0 {
        return Err(ConfigError::Invalid {
            setting: "max_pin_attempts",
            reason: "must be at least 1",
        });
    }
    if pins.min_len == 0 || pins.min_len > pins.max_len {
        return Err(ConfigError::Invalid {
            setting: "min_pin_len/max_pin_len",
            reason: "need 1 <= min_pin_len <= max_pin_len",
        });
    }
    let socket_mode = file.socket_mode.unwrap_or(0o660);
    if socket_mode & !0o777 != 0 {
        return Err(ConfigError::Invalid {
            setting: "socket_mode",
            reason: "only permission bits (0o777) allowed",
        });
    }
    let defaults = Limits::default();
    let limits = Limits {
        max_connections: file.max_connections.unwrap_or(defaults.max_connections),
        hello_timeout: seconds(file.hello_timeout_secs, defaults.hello_timeout),
        idle_timeout: seconds(file.idle_timeout_secs, defaults.idle_timeout),
        write_timeout: seconds(file.write_timeout_secs, defaults.write_timeout),
    };
    if limits.max_connections == 0 {
        return Err(ConfigError::Invalid {
            setting: "max_connections",
            reason: "must be at least 1",
        });
    }
    if file.tls.as_ref().is_some_and(|t| t.handshake_limit == 0) {
        return Err(ConfigError::Invalid {
            setting: "handshake_limit",
            reason: "must be at least 1",
        });
    }
    if file.replication.is_some() && file.tls.is_none() {
        return Err(ConfigError::Invalid {
            setting: "replication",
            reason: "peers are reached over mutual TLS: a [tls] section is needed",
        });
    }
    let mut allowed_uids = file.allowed_uids.unwrap_or_else(|| vec![own_uid, 0]);
    allowed_uids.dedup();
    let mut allowed_gids = file.allowed_gids.unwrap_or_default();
    for name in file.allowed_groups.unwrap_or_default() {
        match nix::unistd::Group::from_name(&name) {
            Ok(Some(group)) => allowed_gids.push(group.gid.as_raw()),
            _ => return Err(ConfigError::UnknownGroup(name)),
        }
    }
    allowed_gids.sort_unstable();
    allowed_gids.dedup();
    Ok(Config {
        state_dir,
        socket,
        socket_mode,
        allowed_uids,
        allowed_gids,
        cards,
        pins,
        log: file.log.unwrap_or_else(|| "info".into()),
        limits,
        tls: file.tls,
        replication: file.replication,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Result<Flags, ConfigError> {
        parse_flags(list.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn tls_and_replication_sections_are_read_and_replication_needs_tls() {
        let parse = |text: &str| {
            let file: FileConfig = toml::from_str(text).unwrap();
            let f = flags(&["--state-dir", "/s", "--socket", "/k"]).unwrap();
            resolve(file, &f, 0)
        };
        let tls = "[tls]\nlisten = \"127.0.0.1:7443\"\ncert = \"/a.crt\"\nkey = \"/a.key\"\nca = \"/ca.crt\"\n";
        let both = parse(&format!(
            "{tls}[replication]\npeers = [\"b:7443\"]\nmode = \"both\"\n"
        ))
        .unwrap();
        let both_tls = both.tls.unwrap();
        assert_eq!(both_tls.listen.as_deref(), Some("127.0.0.1:7443"));
        assert_eq!(both_tls.handshake_limit, DEFAULT_HANDSHAKE_LIMIT);
        let limited = parse(&format!("{tls}handshake_limit = 4\n")).unwrap();
        assert_eq!(limited.tls.unwrap().handshake_limit, 4);
        assert!(parse(&format!("{tls}handshake_limit = 0\n")).is_err());
        let replication = both.replication.unwrap();
        assert_eq!(replication.mode, ReplicationMode::Both);
        assert_eq!(replication.peers, ["b:7443"]);
        let default = parse(&format!("{tls}[replication]\npeers = []\n")).unwrap();
        assert_eq!(default.replication.unwrap().mode, ReplicationMode::Async);
        assert!(matches!(
            parse("[replication]\npeers = [\"b:7443\"]\n"),
            Err(ConfigError::Invalid {
                setting: "replication",
                ..
            })
        ));
        assert!(
            toml::from_str::<FileConfig>("[replication]\npeers = []\nmode = \"sync\"").is_err()
        );
    }

    #[test]
    fn card_instances_are_bounded_and_only_for_spawned_emulators() {
        let parse = |text: &str| {
            let file: FileConfig = toml::from_str(text).unwrap();
            let f = flags(&["--state-dir", "/s", "--socket", "/k"]).unwrap();
            resolve(file, &f, 0)
        };
        let ok = parse("[[cards]]\nbackend = \"emulator\"\ninstances = 2").unwrap();
        assert!(matches!(
            ok.cards[0],
            CardConfig::Emulator {
                instances: Some(2),
                ..
            }
        ));
        for bad in [
            "[[cards]]\nbackend = \"emulator\"\ninstances = 0",
            "[[cards]]\nbackend = \"emulator\"\ninstances = 9",
            "[[cards]]\nbackend = \"emulator\"\nsocket = \"/s\"\ninstances = 2",
        ] {
            assert!(
                matches!(
                    parse(bad),
                    Err(ConfigError::Invalid {
                        setting: "instances",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            "state_dir = \"/var/lib/x\"\nsocket = \"/run/x.sock\"\nmax_pin_attempts = 3\nsocket_mode = 0o600\n",
        )
        .unwrap();
        let f = flags(&["--socket", "/tmp/s", "--state-dir=/tmp/d"]).unwrap();
        let c = resolve(file, &f, 1000).unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/s"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.pins.max_attempts, 3);
        assert_eq!((c.pins.min_len, c.pins.max_len), (4, 64));
        assert_eq!(c.socket_mode, 0o600);
        assert_eq!(c.allowed_uids, vec![1000, 0]);
        assert_eq!(c.limits, Limits::default());
        let limited: FileConfig = toml::from_str(
            "max_connections = 8\nhello_timeout_secs = 0\nidle_timeout_secs = 600\nwrite_timeout_secs = 0\n",
        )
        .unwrap();
        let c = resolve(limited, &f, 1000).unwrap();
        assert_eq!(c.limits.max_connections, 8);
        assert_eq!(c.limits.hello_timeout, None);
        assert_eq!(
            c.limits.idle_timeout,
            Some(std::time::Duration::from_secs(600))
        );
        assert_eq!(c.limits.write_timeout, None);
        let none = FileConfig {
            max_connections: Some(0),
            ..FileConfig::default()
        };
        assert!(matches!(
            resolve(none, &f, 0),
            Err(ConfigError::Invalid {
                setting: "max_connections",
                ..
            })
        ));
        assert_eq!(
            c.cards,
            vec![CardConfig::Emulator {
                state_dir: None,
                socket: None,
                exe: None,
                instances: None,
            }]
        );
    }

    #[test]
    fn unknown_keys_and_arguments_are_refused() {
        let e = toml::from_str::<FileConfig>("sockett = \"/x\"").unwrap_err();
        assert!(e.to_string().contains("sockett"), "{e}");
        let e = toml::from_str::<FileConfig>("[[cards]]\nbackend = \"emulator\"\nsoket = \"/x\"")
            .unwrap_err();
        assert!(e.to_string().contains("soket"), "{e}");
        let ok: FileConfig =
            toml::from_str("[[cards]]\nbackend = \"emulator\"\nsocket = \"/x\"").unwrap();
        assert_eq!(ok.cards.unwrap().len(), 1);
        assert!(matches!(flags(&["--bogus"]), Err(ConfigError::Usage(_))));
        assert!(matches!(flags(&["--socket"]), Err(ConfigError::Usage(_))));
    }

    #[test]
    fn allowed_groups_resolve_by_name_and_unknown_names_are_refused() {
        let f = flags(&["--socket", "/s", "--state-dir", "/d"]).unwrap();
        let file = FileConfig {
            allowed_gids: Some(vec![4242]),
            allowed_groups: Some(vec!["root".into()]),
            ..FileConfig::default()
        };
        assert_eq!(resolve(file, &f, 0).unwrap().allowed_gids, vec![0, 4242]);
        let file = FileConfig {
            allowed_groups: Some(vec!["no-such-group-mesign".into()]),
            ..FileConfig::default()
        };
        match resolve(file, &f, 0) {
            Err(ConfigError::UnknownGroup(name)) => assert_eq!(name, "no-such-group-mesign"),
            other => panic!("expected UnknownGroup, got {other:?}"),
        }
    }

    #[test]
    fn missing_and_invalid_settings_are_named() {
        let f = flags(&["--socket", "/tmp/s"]).unwrap();
        assert!(matches!(
            resolve(FileConfig::default(), &f, 0),
            Err(ConfigError::Missing("--state-dir"))
        ));
        let f = flags(&[
            "--socket",
            "/s",
            "--state-dir",
            "/d",
            "--card-emulator-socket",
            "/e",
        ])
        .unwrap();
        let bad = FileConfig {
            min_pin_len: Some(10),
            max_pin_len: Some(5),
            ..FileConfig::default()
        };
        assert!(matches!(
            resolve(bad, &f, 0),
            Err(ConfigError::Invalid { .. })
        ));
        let c = resolve(FileConfig::default(), &f, 0).unwrap();
        assert_eq!(
            c.cards,
            vec![CardConfig::Emulator {
                state_dir: None,
                socket: Some("/e".into()),
                exe: None,
                instances: None,
            }]
        );
    }
}
