//! Where the daemon's socket is: `MESIGN_HSM_SOCKET`, else the `socket`
//! line of the config file (`MESIGN_HSM_CONF`, else
//! `/etc/mesign-hsm/pkcs11.conf`), else `/run/mesign-hsm/hsmd.sock`.

use std::path::PathBuf;

/// The socket used when neither the environment nor a config file names one.
pub const DEFAULT_SOCKET: &str = "/run/mesign-hsm/hsmd.sock";
/// The config file read when `MESIGN_HSM_CONF` is unset.
pub const DEFAULT_CONF: &str = "/etc/mesign-hsm/pkcs11.conf";

/// Resolves the socket path from the process environment and config file.
pub fn socket_path() -> PathBuf {
    if let Some(s) = std::env::var_os("MESIGN_HSM_SOCKET").filter(|s| !s.is_empty()) {
        return PathBuf::from(s);
    }
    let conf = std::env::var_os("MESIGN_HSM_CONF")
        .map_or_else(|| PathBuf::from(DEFAULT_CONF), PathBuf::from);
    std::fs::read_to_string(conf)
        .ok()
        .and_then(|text| socket_from_conf(&text))
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// Finds `socket = "/path"` (quotes optional) in the config text. The file
/// has a single key that matters, so a full TOML parser inside every host
/// process is not worth it; other lines and `#` comments are ignored.
pub fn socket_from_conf(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let (key, value) = line.split_once('=')?;
        if key.trim() != "socket" {
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
}
