#!/usr/bin/env bash
# Installs what the tests need (Debian packages, cargo tools) and runs every
# test: formatting, lints, the unit and integration tests of every crate, the
# conformance suite against our module and SoftHSMv2, the pkcs11-tool end to
# end run, and the supply-chain audit. The README's test command; .ci/run
# calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

step "Debian packages"
packages=(softhsm2 opensc openssl poppler-utils libnss3-tools python3-venv dpkg-dev p11-kit p11-kit-modules gnutls-bin strace systemd libengine-pkcs11-openssl openjdk-17-jdk-headless xxd)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
else
    echo "all present: ${packages[*]}"
fi

step "cargo tools"
if ! cargo audit --version >/dev/null 2>&1; then
    cargo install --locked cargo-audit
fi
cargo audit --version

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (the tests start the daemon, the card emulator and load the module from target/)"
cargo build --workspace --locked

step "tests"
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$test_log"

step "Debian package: build, install, start as the unit would, sign through p11-kit"
# Installs the package on this machine (root or sudo) and purges it again;
# refuses to run where MeSign HSM state exists already.
scripts/deb-e2e.sh

step "fuzz smoke run (every target, 10 s each)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build)
for target in $(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "corpus/$target" -- -max_total_time=10 -rss_limit_mb=1024)
done

step "supply chain: the RSA verifier stays out of the product"
for product in mesign-proto mesign-pci-driver-shim mesign-hsmd mesign-pkcs11; do
    if cargo tree --locked -p "$product" --edges normal,build --prefix none | grep -q '^rsa v'; then
        echo "the rsa crate (RUSTSEC-2023-0071) reached $product" >&2
        exit 1
    fi
done
echo "rsa is used by tests and the benchmark only"

step "supply chain: cargo audit against the offline advisory database"
advisory_db="$(pwd)/../shared/advisory-db"
if [ ! -d "$advisory_db" ]; then
    echo "advisory database not found at $advisory_db" >&2
    exit 1
fi
cargo audit --db "$advisory_db" --no-fetch

# One closing line for the whole run: the sum over every cargo test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$test_log"
