//! `mesign-hsm`, the administrator's command line.
//!
//! It speaks the daemon's own protocol over the same socket the PKCS#11
//! module uses. This first version reports status; token, key and certificate
//! management follow (see the README's roadmap).

#![forbid(unsafe_code)]

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use mesign_proto::{
    decode_frame_body, read_frame, write_frame, Reply, ReplyBody, ReplyResult, Request,
    RequestBody, Status, PROTOCOL_VERSION,
};

const USAGE: &str = "\
usage: mesign-hsm [--socket PATH] [--json] status

  status     show the daemon version and, for each card, its slot, backend,
             serial, firmware version, health and token state

The socket is --socket, else $MESIGN_HSM_SOCKET, else /run/mesign-hsm/hsmd.sock.
Exit codes: 0 success, 1 the daemon refused or failed, 2 usage error,
3 the daemon could not be reached.";

/// Default socket path, shared with the module's documented default.
const DEFAULT_SOCKET: &str = "/run/mesign-hsm/hsmd.sock";

/// Why the CLI failed, with the exit code each maps to.
#[derive(Debug)]
enum CliError {
    Usage(String),
    Unreachable(PathBuf, std::io::Error),
    Protocol(mesign_proto::FrameError),
    Refused(u64),
    UnexpectedReply,
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Unreachable(..) => 3,
            CliError::Protocol(_) | CliError::Refused(_) | CliError::UnexpectedReply => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(msg) => write!(f, "{msg}\n\n{USAGE}"),
            CliError::Unreachable(path, e) => {
                write!(f, "cannot reach mesign-hsmd at {}: {e}", path.display())
            }
            CliError::Protocol(e) => write!(f, "talking to mesign-hsmd: {e}"),
            CliError::Refused(rv) => write!(f, "mesign-hsmd refused the request (CK_RV 0x{rv:x})"),
            CliError::UnexpectedReply => write!(f, "mesign-hsmd sent an unexpected reply"),
        }
    }
}

struct Options {
    socket: PathBuf,
    json: bool,
    command: String,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Options, CliError> {
    let mut socket = None;
    let mut json = false;
    let mut command = None;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => {
                let path = args
                    .next()
                    .ok_or_else(|| CliError::Usage("--socket needs a path".into()))?;
                socket = Some(PathBuf::from(path));
            }
            "--json" => json = true,
            "-h" | "--help" => return Err(CliError::Usage("help".into())),
            _ if arg.starts_with('-') => {
                return Err(CliError::Usage(format!("unknown option {arg}")))
            }
            _ if command.is_none() => command = Some(arg),
            _ => return Err(CliError::Usage(format!("unexpected argument {arg}"))),
        }
    }
    let socket = socket
        .or_else(|| std::env::var_os("MESIGN_HSM_SOCKET").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let command = command.ok_or_else(|| CliError::Usage("no command given".into()))?;
    Ok(Options {
        socket,
        json,
        command,
    })
}

/// One connection to the daemon, acting as its own application.
struct Connection {
    stream: BufReader<UnixStream>,
    buf: Vec<u8>,
    next_id: u64,
}

impl Connection {
    fn open(path: &PathBuf) -> Result<Self, CliError> {
        let stream =
            UnixStream::connect(path).map_err(|e| CliError::Unreachable(path.clone(), e))?;
        let mut conn = Connection {
            stream: BufReader::new(stream),
            buf: Vec::new(),
            next_id: 1,
        };
        let app = u64::from(std::process::id()) << 32 | 0x4d53;
        conn.call(RequestBody::Hello { app })?;
        Ok(conn)
    }

    fn call(&mut self, body: RequestBody) -> Result<ReplyBody, CliError> {
        let id = self.next_id;
        self.next_id += 1;
        let req = Request {
            version: PROTOCOL_VERSION,
            id,
            body,
        };
        write_frame(self.stream.get_mut(), &req, &mut self.buf)
            .map_err(|e| CliError::Protocol(e.into()))?;
        read_frame(&mut self.stream, &mut self.buf).map_err(CliError::Protocol)?;
        let reply: Reply = decode_frame_body(&self.buf).map_err(CliError::Protocol)?;
        if reply.id != id {
            return Err(CliError::UnexpectedReply);
        }
        match reply.result {
            ReplyResult::Ok(body) => Ok(body),
            ReplyResult::Err(rv) => Err(CliError::Refused(rv)),
        }
    }
}

fn print_status(status: &Status, json: bool) {
    if json {
        let cards: Vec<String> = status
            .cards
            .iter()
            .map(|c| {
                format!(
                    "{{\"slot\":{},\"backend\":{},\"serial\":{},\"firmware_version\":\"{}.{}\",\"operational\":{},\"token_initialized\":{},\"objects\":{}}}",
                    c.slot,
                    json_string(&c.backend),
                    json_string(&c.serial),
                    c.firmware_version.0,
                    c.firmware_version.1,
                    c.operational,
                    c.token_initialized,
                    c.objects
                )
            })
            .collect();
        println!(
            "{{\"daemon_version\":{},\"cards\":[{}]}}",
            json_string(&status.daemon_version),
            cards.join(",")
        );
        return;
    }
    println!("mesign-hsmd {}", status.daemon_version);
    for c in &status.cards {
        println!(
            "slot {}: {} serial {} firmware {}.{} {} token {} objects {}",
            c.slot,
            c.backend,
            c.serial,
            c.firmware_version.0,
            c.firmware_version.1,
            if c.operational {
                "operational"
            } else {
                "IN ERROR STATE"
            },
            if c.token_initialized {
                "initialized"
            } else {
                "not initialized"
            },
            c.objects
        );
    }
}

/// A JSON string literal with the escapes JSON requires.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn run() -> Result<(), CliError> {
    let opts = parse_args(std::env::args().skip(1))?;
    match opts.command.as_str() {
        "status" => {
            let mut conn = Connection::open(&opts.socket)?;
            match conn.call(RequestBody::Status)? {
                ReplyBody::Status(status) => print_status(&status, opts.json),
                _ => return Err(CliError::UnexpectedReply),
            }
            Ok(())
        }
        other => Err(CliError::Usage(format!("unknown command {other}"))),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) if msg == "help" => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesign-hsm: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_socket_json_and_command() {
        let o = parse_args(args(&["--socket", "/tmp/x.sock", "--json", "status"])).unwrap();
        assert_eq!(o.socket, PathBuf::from("/tmp/x.sock"));
        assert!(o.json);
        assert_eq!(o.command, "status");
    }

    #[test]
    fn rejects_unknown_options_and_missing_command() {
        assert!(matches!(
            parse_args(args(&["--pin", "1234"])),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(parse_args(args(&[])), Err(CliError::Usage(_))));
        assert!(matches!(
            parse_args(args(&["--socket"])),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn unreachable_daemon_exits_3() {
        let err = Connection::open(&PathBuf::from("/nonexistent/mesign.sock"))
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 3);
    }
}
