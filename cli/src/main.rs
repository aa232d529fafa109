//! `mesign-hsm`, the administrator's command line: token and PINs, keys on
//! the card, certificate requests and certificates.
//!
//! It talks to `mesign-hsmd` in the daemon's own protocol (`mesign-proto`)
//! over the socket the PKCS#11 module uses, as one more application (a
//! `Hello` with a random application number): the same PKCS#11 semantics
//! and return codes as through the module, no dlopen of our own cdylib in
//! an admin tool, no change to the daemon, and every request it sends is
//! one a PKCS#11 application could send. So the daemon's rules (PIN
//! lengths, lockout, object policy) apply to the CLI unchanged.

#![forbid(unsafe_code)]

mod args;
mod audit;
mod backup;
mod cert;
mod client;
mod csr;
mod domain;
mod error;
mod keys;
mod pin;
mod public_key;
mod tls_cert;
mod token;

use std::process::ExitCode;

use args::Args;
use error::CliError;

const USAGE: &str = "\
usage: mesign-hsm [--socket PATH] [--slot N] [--json] COMMAND [OPTIONS]

Token and PINs
  status                         the daemon and its cards
  token init --label L [--force] initialise the token: SO PIN, then user PIN
                                 (--force re-initialises, erasing every object)
  token status                   label, serial, PIN state
  pin change [--so]              change the user PIN (or the SO PIN)
  pin unlock                     the SO sets a new user PIN (clears a lockout)

Keys (generated on the card; private keys sensitive and never extractable)
  key generate --type T --label L [--id HEX] [--usage sign[,decrypt,...]]
                                 T: ec-p256 ec-p384 ec-p521 rsa-2048 rsa-3072
                                 rsa-4096; usage defaults to sign only; the id
                                 defaults to 8 random bytes from the card
  list [--login]                 keys and certificates (private keys need a
                                 login: --login, or a PIN from file/variable)
  delete --label L [--id HEX] [--yes]
                                 the key pair and its certificates
  export-public --key L [--id HEX] [--out FILE]
                                 the public key as PEM (SubjectPublicKeyInfo)

Certificates
  csr --key L --subject \"CN=…,O=…,C=…\" [--san DNS:…|email:…|URI:…]...
      [--eku document-signing|email-protection|client-auth|code-signing|
       time-stamping]... [--rsa-pss] --out req.pem
                                 PKCS#10 request signed on the card, verified
                                 before it is written
  cert import --key L CERT.pem [--chain CHAIN.pem] [--replace]
                                 store the certificate beside its key (refused
                                 unless its public key is the key's) and the
                                 CA certificates of the chain

Audit log (hash-chained, kept by the daemon per slot; readable by any
user allowed on the socket)
  audit show [--from N]          the records, one per line (--json: as stored)
  audit verify                   checks sequence numbers and the hash chain;
                                 prints the record count and the head hash
                                 (note it: a log cut short at the end still
                                 verifies, but its head hash changes), or
                                 names the first bad record and exits 1

Two boxes: cloning domain and backup (see the README)
  domain create --shares N --threshold K [--out-dir DIR] [--replace]
                                 SO: the card makes a domain key and splits
                                 it into N share files, each sealed under its
                                 custodian's passphrase; any K rebuild it
  domain join SHAREFILE... [--replace]
                                 SO: install the domain of K share files
  domain show                    the card's domain id, or none
  domain tls-cert --name NAME --out-dir DIR [--ip A] [--dns H] [--client]
                                 SO: a TLS key pair (made here) and its
                                 certificate, signed by the card's domain CA:
                                 NAME.crt, NAME.key (0600), domain-ca.crt;
                                 a box's (peers and listener) or, with
                                 --client, a signing server's
  backup export --out FILE       user: every token object, keys wrapped
                                 under the domain key, tagged by the card
  backup import FILE             user: restore a backup of the same domain
                                 (objects with the same class and id are
                                 skipped and listed)
  Passphrases: --passphrase-file FILE once per custodian / share file, in
  order, else a prompt. --replace leaves the current domain.

PINs are never command-line arguments. Each comes from a file (first line),
else an environment variable, else a prompt without echo:
  user PIN   --pin-file FILE      MESIGN_HSM_PIN
  SO PIN     --so-pin-file FILE   MESIGN_HSM_SO_PIN
  new PIN    --new-pin-file FILE  MESIGN_HSM_NEW_PIN   (pin change, pin unlock)

The socket is --socket, else $MESIGN_HSM_SOCKET, else /run/mesign-hsm/hsmd.sock.
The slot is --slot, else the first slot.

Exit codes: 0 success; 1 refused or failed (the message says why, with the
PKCS#11 code); 2 usage error or no PIN source; 3 the daemon could not be
reached; 4 no such key; 5 wrong or locked PIN.";

fn run() -> Result<(), CliError> {
    let args = Args::parse(std::env::args().skip(1))?;
    match args.command.as_slice() {
        ["status"] => token::status(&args),
        ["token", "init"] => token::init(&args),
        ["token", "status"] => token::token_status(&args),
        ["pin", "change"] => token::change(&args),
        ["pin", "unlock"] => token::unlock(&args),
        ["key", "generate"] => keys::generate(&args),
        ["list"] => keys::list(&args),
        ["delete"] => keys::delete(&args),
        ["export-public"] => keys::export_public(&args),
        ["csr"] => csr::csr(&args),
        ["cert", "import"] => cert::import(&args),
        ["audit", "show"] => audit::show(&args),
        ["audit", "verify"] => audit::verify(&args),
        ["domain", "create"] => domain::create(&args),
        ["domain", "join"] => domain::join(&args),
        ["domain", "show"] => domain::show(&args),
        ["domain", "tls-cert"] => tls_cert::issue(&args),
        ["backup", "export"] => backup::export(&args),
        ["backup", "import"] => backup::import(&args),
        other => Err(CliError::Usage(format!(
            "unknown command {}",
            other.join(" ")
        ))),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mesign-hsm: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
