//! Where the daemons are.
//!
//! One daemon (the usual case): `MESIGN_HSM_SOCKET`, else the `socket` line
//! of the config file (`MESIGN_HSM_CONF`, else
//! `/etc/mesign-hsm/pkcs11.conf`), else `/run/mesign-hsm/hsmd.sock`.
//!
//! Several daemons, replicas of one token (see [`crate::failover`]): the
//! `daemons = ["unix:/run/mesign-hsm/hsmd.sock", "tls:box-b:7443"]` line of
//! the config file, or the same list comma-separated in
//! `MESIGN_HSM_DAEMONS` (for tests); `tls:` entries take the client
//! certificate, its key and the domain CA from the `tls_cert`, `tls_key`
//! and `tls_ca` lines. `MESIGN_HSM_SOCKET` still overrides everything with
//! one Unix socket.

use std::path::PathBuf;

/// The socket used when neither the environment nor a config file names one.
pub const DEFAULT_SOCKET: &str = "/run/mesign-hsm/hsmd.sock";
/// The config file read when `MESIGN_HSM_CONF` is unset.
pub const DEFAULT_CONF: &str = "/etc/mesign-hsm/pkcs11.conf";

/// One daemon the module may talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:PATH`: a daemon on this machine.
    Unix(PathBuf),
    /// `tls:HOST:PORT`: a remote box, over mutual TLS.
    Tls { host: String, port: u16 },
}

/// The files a TLS connection needs (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This signing server's certificate chain (issued with `--client`).
    pub cert: PathBuf,
    /// Its PKCS#8 private key.
    pub key: PathBuf,
    /// The domain CA: the only trust anchor for the boxes.
    pub ca: PathBuf,
}

/// What the module was configured to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemons {
    /// In order of preference: the first healthy one serves everything but
    /// spread signing.
    pub endpoints: Vec<Endpoint>,
    /// Present when every `tls_*` line is.
    pub tls: Option<TlsFiles>,
}

/// A config line or list entry the module cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// Resolves the socket path from the process environment and config file,
/// ignoring any `daemons` list.
pub fn socket_path() -> PathBuf {
    if let Some(s) = std::env::var_os("MESIGN_HSM_SOCKET").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    conf_text()
        .and_then(|text| socket_from_conf(&text))
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// Resolves every daemon from the environment and config file (see the
/// module docs for the order).
pub fn daemons() -> Result<Daemons, ConfigError> {
    if let Some(s) = std::env::var_os("MESIGN_HSM_SOCKET").filter(|s| !s.is_empty()) {
        return Ok(one(PathBuf::from(s)));
    }
    let text = conf_text().unwrap_or_default();
    let list = match std::env::var("MESIGN_HSM_DAEMONS") {
        Ok(env) if !env.trim().is_empty() => Some(env.split(',').map(str::to_string).collect()),
        _ => list_from_conf(&text, "daemons"),
    };
    let Some(list) = list else {
        let socket = socket_from_conf(&text).unwrap_or_else(|| DEFAULT_SOCKET.to_string());
        return Ok(one(PathBuf::from(socket)));
    };
    let endpoints = list
        .iter()
        .map(|e| endpoint(e.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(ConfigError("daemons: the list is empty".into()));
    }
    let tls = match (
        value_from_conf(&text, "tls_cert"),
        value_from_conf(&text, "tls_key"),
        value_from_conf(&text, "tls_ca"),
    ) {
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
        }),
        _ => None,
    };
    if tls.is_none() && endpoints.iter().any(|e| matches!(e, Endpoint::Tls { .. })) {
        return Err(ConfigError(
            "tls: daemons need tls_cert, tls_key and tls_ca".into(),
        ));
    }
    Ok(Daemons { endpoints, tls })
}

fn one(socket: PathBuf) -> Daemons {
    Daemons {
        endpoints: vec![Endpoint::Unix(socket)],
        tls: None,
    }
}

fn conf_text() -> Option<String> {
    let conf = std::env::var_os("MESIGN_HSM_CONF")
        .map_or_else(|| PathBuf::from(DEFAULT_CONF), PathBuf::from);
    std::fs::read_to_string(conf).ok()
}

/// Parses one `unix:PATH` or `tls:HOST:PORT` entry.
pub fn endpoint(entry: &str) -> Result<Endpoint, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "daemons: {entry:?} is not unix:PATH or tls:HOST:PORT"
        ))
    };
    if let Some(path) = entry.strip_prefix("unix:") {
        return match path {
            "" => Err(bad()),
            _ => Ok(Endpoint::Unix(path.into())),
        };
    }
    let address = entry.strip_prefix("tls:").ok_or_else(bad)?;
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Endpoint::Tls {
        host: host.to_string(),
        port,
    })
}

/// Finds `socket = "/path"` (quotes optional) in the config text.
pub fn socket_from_conf(text: &str) -> Option<String> {
    value_from_conf(text, "socket")
}

/// Finds `key = "value"` (quotes optional) in the config text. The file
/// has a handful of simple keys, so a full TOML parser inside every host
/// process is not worth it; other lines and `#` comments are ignored.
fn value_from_conf(text: &str, wanted: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let (key, value) = line.split_once('=')?;
        if key.trim() != wanted {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// Finds `key = ["a", "b"]` (the list may span lines) in the config text.
fn list_from_conf(text: &str, wanted: &str) -> Option<Vec<String>> {
    let mut lines = text.lines().map(|l| l.split('#').next().unwrap_or(""));
    let first = lines.find(|line| {
        line.split_once('=')
            .is_some_and(|(key, _)| key.trim() == wanted)
    })?;
    let mut list = first.split_once('=')?.1.to_string();
    while !list.contains(']') {
        list.push_str(lines.next()?);
    }
    let inner = list.split_once('[')?.1.split(']').next()?;
    Some(
        inner
            .split(',')
            .map(|e| e.trim().trim_matches('"').to_string())
            .filter(|e| !e.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_line_is_found_among_others() {
        let text = "# MeSign\nlog = \"x\"\nsocket = \"/tmp/h.sock\"  # here\n";
        assert_eq!(socket_from_conf(text).as_deref(), Some("/tmp/h.sock"));
        assert_eq!(socket_from_conf("socket=/a/b").as_deref(), Some("/a/b"));
        assert_eq!(
            socket_from_conf("sockets = \"/x\"\n# socket = \"/y\""),
            None
        );
        assert_eq!(socket_from_conf("socket = \"\""), None);
    }

    #[test]
    fn daemon_lists_on_one_line_or_several() {
        let one_line = "daemons = [\"unix:/a.sock\", \"tls:box-b:7443\"]\n";
        assert_eq!(
            list_from_conf(one_line, "daemons").unwrap(),
            vec!["unix:/a.sock", "tls:box-b:7443"]
        );
        let several = "socket = \"/x\"\ndaemons = [\n  \"unix:/a\",  # local\n  \"unix:/b\",\n]\n";
        assert_eq!(
            list_from_conf(several, "daemons").unwrap(),
            vec!["unix:/a", "unix:/b"]
        );
        assert_eq!(list_from_conf("# daemons = [\"unix:/a\"]", "daemons"), None);
    }

    #[test]
    fn endpoints_parse_or_say_why_not() {
        assert_eq!(
            endpoint("unix:/run/h.sock"),
            Ok(Endpoint::Unix("/run/h.sock".into()))
        );
        assert_eq!(
            endpoint("tls:127.0.0.1:7443"),
            Ok(Endpoint::Tls {
                host: "127.0.0.1".into(),
                port: 7443
            })
        );
        assert_eq!(
            endpoint("tls:[::1]:7443"),
            Ok(Endpoint::Tls {
                host: "::1".into(),
                port: 7443
            })
        );
        for bad in ["unix:", "/run/h.sock", "tls:host", "tls::1", "tls:h:port"] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
    }
}
