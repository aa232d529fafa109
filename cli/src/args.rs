//! The command line: global options, the command words, and each command's
//! options, checked against the command's own list so a typo is a usage
//! error rather than an ignored flag.
//!
//! There is deliberately no `--pin`: a PIN on the command line lands in the
//! shell history and in `ps` output. PINs come from a prompt, a file or an
//! environment variable (see `pin`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::CliError;

/// The daemon socket used when neither `--socket` nor `MESIGN_HSM_SOCKET`
/// names one; the module documents the same default.
pub const DEFAULT_SOCKET: &str = "/run/mesign-hsm/hsmd.sock";

/// One option a command accepts: its name and whether it takes a value.
/// Options that take a value may repeat (`--san`, `--eku`).
type Spec = (&'static str, bool);

/// Options every command accepts.
const GLOBAL: &[Spec] = &[
    ("socket", true),
    ("slot", true),
    ("json", false),
    ("pin-file", true),
    ("so-pin-file", true),
    ("new-pin-file", true),
];

/// The commands, as the words that name them, with their own options.
const COMMANDS: &[(&[&str], &[Spec])] = &[
    (&["status"], &[]),
    (&["token", "init"], &[("label", true), ("force", false)]),
    (&["token", "status"], &[]),
    (&["pin", "change"], &[("so", false)]),
    (&["pin", "unlock"], &[]),
    (
        &["key", "generate"],
        &[
            ("type", true),
            ("label", true),
            ("id", true),
            ("usage", true),
        ],
    ),
    (
        &["csr"],
        &[
            ("key", true),
            ("id", true),
            ("subject", true),
            ("san", true),
            ("eku", true),
            ("rsa-pss", false),
            ("out", true),
        ],
    ),
    (
        &["cert", "import"],
        &[
            ("key", true),
            ("id", true),
            ("chain", true),
            ("replace", false),
        ],
    ),
    (&["list"], &[("login", false)]),
    (
        &["delete"],
        &[("label", true), ("id", true), ("yes", false)],
    ),
    (
        &["export-public"],
        &[("key", true), ("id", true), ("out", true)],
    ),
    (&["audit", "show"], &[("from", true)]),
    (&["audit", "verify"], &[]),
    (
        &["domain", "create"],
        &[
            ("shares", true),
            ("threshold", true),
            ("out-dir", true),
            ("passphrase-file", true),
            ("replace", false),
        ],
    ),
    (
        &["domain", "join"],
        &[("passphrase-file", true), ("replace", false)],
    ),
    (&["domain", "show"], &[]),
    (
        &["domain", "tls-cert"],
        &[
            ("name", true),
            ("out-dir", true),
            ("ip", true),
            ("dns", true),
            ("client", false),
        ],
    ),
    (&["backup", "export"], &[("out", true)]),
    (&["backup", "import"], &[]),
];

/// A parsed command line.
#[derive(Debug)]
pub struct Args {
    /// The command words, e.g. `["key", "generate"]`.
    pub command: Vec<&'static str>,
    values: BTreeMap<&'static str, Vec<String>>,
    flags: Vec<&'static str>,
    /// Arguments that are not options (the certificate file of `cert import`).
    pub positional: Vec<String>,
}

impl Args {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, CliError> {
        let args: Vec<String> = args.into_iter().collect();
        if args.iter().any(|a| a == "-h" || a == "--help") {
            return Err(CliError::Help);
        }
        let words = non_option_words(&args);
        let (command, specs) = COMMANDS
            .iter()
            .filter(|(name, _)| words.len() >= name.len() && words[..name.len()] == name[..])
            .max_by_key(|(name, _)| name.len())
            .ok_or_else(|| match words.is_empty() {
                true => CliError::Usage("no command given".into()),
                false => CliError::Usage(format!("unknown command {}", words.join(" "))),
            })?;
        let mut parsed = Args {
            command: command.to_vec(),
            values: BTreeMap::new(),
            flags: Vec::new(),
            positional: Vec::new(),
        };
        let mut command_words = command.len();
        let mut iter = args.into_iter();
        while let Some(arg) = iter.next() {
            if let Some(name) = arg.strip_prefix("--") {
                if name == "pin" || name == "so-pin" || name == "new-pin" {
                    return Err(CliError::Usage(format!(
                        "--{name} is not accepted: a PIN on the command line ends up in shell history and ps; use --{name}-file FILE, the MESIGN_HSM_{} variable, or the prompt",
                        name.to_uppercase().replace('-', "_")
                    )));
                }
                let Some(&(spec, takes_value)) =
                    GLOBAL.iter().chain(specs.iter()).find(|(n, _)| *n == name)
                else {
                    return Err(CliError::Usage(format!(
                        "unknown option --{name} for `{}`",
                        command.join(" ")
                    )));
                };
                if takes_value {
                    let value = iter
                        .next()
                        .ok_or_else(|| CliError::Usage(format!("--{name} needs a value")))?;
                    parsed.values.entry(spec).or_default().push(value);
                } else {
                    parsed.flags.push(spec);
                }
            } else if arg.starts_with('-') && arg != "-" {
                return Err(CliError::Usage(format!("unknown option {arg}")));
            } else if command_words > 0 {
                command_words -= 1;
            } else {
                parsed.positional.push(arg);
            }
        }
        Ok(parsed)
    }

    /// The single value of `--name`, if given; a usage error if repeated.
    pub fn value(&self, name: &str) -> Result<Option<&str>, CliError> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one)),
            Some(_) => Err(CliError::Usage(format!("--{name} given more than once"))),
        }
    }

    /// The value of a mandatory `--name`.
    pub fn required(&self, name: &str) -> Result<&str, CliError> {
        self.value(name)?
            .ok_or_else(|| CliError::Usage(format!("`{}` needs --{name}", self.command.join(" "))))
    }

    /// Every value of a repeatable `--name`.
    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// `--json`.
    pub fn json(&self) -> bool {
        self.flag("json")
    }

    /// The daemon socket: `--socket`, else `MESIGN_HSM_SOCKET`, else the
    /// default.
    pub fn socket(&self) -> Result<PathBuf, CliError> {
        Ok(self
            .value("socket")?
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("MESIGN_HSM_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)))
    }

    /// `--slot N`, if given.
    pub fn slot(&self) -> Result<Option<u64>, CliError> {
        self.value("slot")?
            .map(|s| {
                s.parse()
                    .map_err(|_| CliError::Usage(format!("--slot {s}: not a slot number")))
            })
            .transpose()
    }

    /// `--id HEX` as bytes, if given.
    pub fn id(&self) -> Result<Option<Vec<u8>>, CliError> {
        self.value("id")?.map(parse_hex).transpose()
    }

    /// The one positional argument a command needs.
    pub fn single_positional(&self, what: &str) -> Result<&str, CliError> {
        match self.positional.as_slice() {
            [one] => Ok(one),
            [] => Err(CliError::Usage(format!(
                "`{}` needs {what}",
                self.command.join(" ")
            ))),
            more => Err(CliError::Usage(format!("unexpected argument {}", more[1]))),
        }
    }

    /// A usage error unless there are no positional arguments.
    pub fn no_positional(&self) -> Result<(), CliError> {
        match self.positional.first() {
            None => Ok(()),
            Some(arg) => Err(CliError::Usage(format!("unexpected argument {arg}"))),
        }
    }
}

/// The arguments that are neither options nor option values, in order.
/// An option name takes a value in every command or in none, so this works
/// before the command is known.
fn non_option_words(args: &[String]) -> Vec<&str> {
    let takes_value = |name: &str| {
        GLOBAL
            .iter()
            .chain(COMMANDS.iter().flat_map(|(_, specs)| specs.iter()))
            .any(|(n, v)| *n == name && *v)
    };
    let mut words = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.strip_prefix("--") {
            Some(name) if takes_value(name) => {
                iter.next();
            }
            Some(_) => {}
            None if arg.starts_with('-') && arg != "-" => {}
            None => words.push(arg.as_str()),
        }
    }
    words
}

/// Parses hex (an optional `0x`, no separators) into bytes.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, CliError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    let bad = || CliError::Usage(format!("{s}: not an even number of hex digits"));
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(bad());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Args, CliError> {
        Args::parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn commands_options_and_positionals() {
        let a = parse(&[
            "--socket",
            "/tmp/x.sock",
            "cert",
            "import",
            "--key",
            "k1",
            "c.pem",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.command, ["cert", "import"]);
        assert_eq!(a.socket().unwrap(), PathBuf::from("/tmp/x.sock"));
        assert_eq!(a.required("key").unwrap(), "k1");
        assert_eq!(a.single_positional("a file").unwrap(), "c.pem");
        assert!(a.json());
        assert!(!a.flag("replace"));
    }

    #[test]
    fn repeatable_values() {
        let a = parse(&["csr", "--san", "DNS:a", "--san", "email:b@c", "--key", "k"]).unwrap();
        assert_eq!(a.values("san"), ["DNS:a", "email:b@c"]);
        assert!(a.value("san").is_err());
        assert!(a.values("eku").is_empty());
    }

    #[test]
    fn pins_on_the_command_line_are_refused() {
        for opt in ["--pin", "--so-pin", "--new-pin"] {
            let err = parse(&["token", "init", opt, "1234"]).unwrap_err();
            assert!(
                matches!(&err, CliError::Usage(m) if m.contains("shell history")),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_commands_and_options() {
        assert!(matches!(parse(&[]), Err(CliError::Usage(_))));
        assert!(matches!(parse(&["frobnicate"]), Err(CliError::Usage(_))));
        assert!(matches!(parse(&["token"]), Err(CliError::Usage(_))));
        // --type belongs to key generate, not to list.
        assert!(matches!(
            parse(&["list", "--type", "x"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            parse(&["list", "--socket"]),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(parse(&["list", "--help"]), Err(CliError::Help)));
    }

    #[test]
    fn hex_ids() {
        assert_eq!(parse_hex("0x01ff").unwrap(), [1, 0xff]);
        assert_eq!(parse_hex("a0").unwrap(), [0xa0]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("").is_err());
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
