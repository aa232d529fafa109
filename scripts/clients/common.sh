# Shared by the real-client drivers in scripts/clients/: sourced, not run.
#
# Each driver is run as `scripts/clients/<client>.sh [PROFILE_DIR]` (default
# target/debug). It starts its own mesign-hsmd on a fresh state directory in
# a mktemp dir (readiness polled with a deadline) and points the client at
# PROFILE_DIR/libmesign_pkcs11.so. With MESIGN_CLIENT_MODULE set to another
# module (SoftHSMv2) it runs the same steps against that module instead, with
# SoftHSM's token directory in the temp dir, so every driver is also checked
# against a reference. The trap stops the daemon and removes the temp dir.
#
# Output: one `PASS: ...` / `FAIL: ...` / `SKIP: ...` line per check, then
# `SUMMARY: N passed, M failed`; the exit status is non-zero on any failure.

set -euo pipefail

PROFILE_DIR=$(cd "${1:-target/debug}" && pwd)
MODULE=${MESIGN_CLIENT_MODULE:-$PROFILE_DIR/libmesign_pkcs11.so}
if [ -n "${MESIGN_CLIENT_MODULE:-}" ]; then
    TARGET=softhsm
else
    TARGET=mesign
fi
SO_PIN=12345678
USER_PIN=123456
TOKEN_LABEL=client-token
READY_SECONDS=20
STOP_SECONDS=20

WORK=$(mktemp -d -t mesign-client.XXXXXX)
LOG=$WORK/hsmd.log
DAEMON_PID=
# shellcheck source=../lib/steps.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/steps.sh"

client_cleanup() {
    end_daemon "$DAEMON_PID" "$STOP_SECONDS"
    if [ "$FAILED" -ne 0 ] && [ -s "$LOG" ]; then
        echo "--- daemon log ($LOG) ---"
        tail -n 30 "$LOG" || true
    fi
    rm -rf "$WORK"
}
trap client_cleanup EXIT

skip() { echo "SKIP: $1"; }

summary() {
    echo "SUMMARY: $PASSED passed, $FAILED failed"
    if [ "$FAILED" -ne 0 ]; then
        printf '  failed: %s\n' "${FAILURES[@]}"
        exit 1
    fi
}

need() {
    local tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null; then
            echo "FAIL: $tool is not installed (scripts/test-all.sh installs it)"
            exit 1
        fi
    done
}

p11() { pkcs11-tool --module "$MODULE" "$@"; }

# Starts our daemon on a fresh state directory, or prepares SoftHSM's
# configuration; then initialises a token labelled $TOKEN_LABEL with the
# SO PIN and the user PIN.
start_token() {
    if [ "$TARGET" = mesign ]; then
        local f
        for f in mesign-hsmd mesign-card-emu libmesign_pkcs11.so; do
            if [ ! -e "$PROFILE_DIR/$f" ]; then
                echo "FAIL: $PROFILE_DIR/$f is missing: run \`cargo build --workspace\` first"
                exit 1
            fi
        done
        export MESIGN_HSM_SOCKET=$WORK/hsmd.sock
        "$PROFILE_DIR/mesign-hsmd" --state-dir "$WORK/state" --socket "$MESIGN_HSM_SOCKET" >>"$LOG" 2>&1 &
        DAEMON_PID=$!
        local deadline=$((SECONDS + READY_SECONDS))
        until [ -S "$MESIGN_HSM_SOCKET" ] && p11 -L >/dev/null 2>&1; do
            if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
                DAEMON_PID=
                fail "mesign-hsmd exited before it was ready"
                summary
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                fail "mesign-hsmd not ready within ${READY_SECONDS}s"
                summary
            fi
            sleep 0.05
        done
    else
        mkdir -p "$WORK/softhsm-tokens"
        printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
            "$WORK/softhsm-tokens" >"$WORK/softhsm2.conf"
        export SOFTHSM2_CONF=$WORK/softhsm2.conf
    fi
    echo "module: $MODULE ($TARGET)"
    p11 --init-token --label "$TOKEN_LABEL" --so-pin "$SO_PIN" >"$WORK/step.log" 2>&1 ||
        { fail "init token"; cat "$WORK/step.log"; summary; }
    p11 --token-label "$TOKEN_LABEL" --init-pin --login --login-type so --so-pin "$SO_PIN" \
        --new-pin "$USER_PIN" >"$WORK/step.log" 2>&1 ||
        { fail "init user PIN"; cat "$WORK/step.log"; summary; }
}

# The token's slot id in hex, e.g. 0x0 (SoftHSM moves an initialised token
# to a new slot).
token_slot() {
    p11 -L | awk -v label="$TOKEN_LABEL" '
        /^Slot / { slot = $3; gsub(/[():]/, "", slot) }
        /token label/ { sub(/^[^:]*: */, ""); if ($0 == label) { print slot; exit } }'
}

# p11_user ARGS...: pkcs11-tool on our token, logged in as the user.
p11_user() { p11 --token-label "$TOKEN_LABEL" --login --pin "$USER_PIN" "$@"; }

# Generates a key pair with pkcs11-tool: TYPE (rsa:2048, EC:prime256v1),
# hex ID, LABEL.
keypair() { p11_user --keypairgen --key-type "$1" --id "$2" --label "$3" >/dev/null; }

# Points OpenSSL at the libp11 engine (libengine-pkcs11-openssl) with our
# module and the user PIN, through a config file in $WORK; fails the script
# when the engine is not installed. Call after start_token.
use_openssl_engine() {
    ENGINE=$(find /usr/lib -path '*engines-3/pkcs11.so' -print -quit 2>/dev/null || true)
    if [ -z "$ENGINE" ]; then
        echo "FAIL: the libp11 engine (libengine-pkcs11-openssl) is not installed"
        exit 1
    fi
    cat >"$WORK/openssl.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
dynamic_path = $ENGINE
MODULE_PATH = $MODULE
PIN = $USER_PIN
init = 0
[req]
distinguished_name = dn
[dn]
EOF
    export OPENSSL_CONF=$WORK/openssl.cnf
}

# The clients' Python environment: a venv under target/ (created when
# missing) with the two PKCS#11 bindings at the versions whose sdists the
# test suites come from.
PYTHON_PKCS11_VERSION=0.10.1
PYKCS11_VERSION=1.5.20
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/target/py-clients
SDISTS=$ROOT/target/py-clients-sdists

# The two Python suites run in parallel tests: one builds the venv and
# fetches the sdists while the other waits on the lock.
LOCK=$ROOT/target/py-clients.lock

python_env() {
    mkdir -p "$ROOT/target"
    (
        flock 9
        if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import pkcs11, PyKCS11, pytest, cryptography, parameterized" 2>/dev/null; then
            python3 -m venv "$VENV"
            "$VENV/bin/pip" install -q "python-pkcs11==$PYTHON_PKCS11_VERSION" "PyKCS11==$PYKCS11_VERSION" \
                pytest "cryptography>=44" "parameterized>=0.9"
        fi
    ) 9>"$LOCK"
}

# fetched_sdist NAME VERSION: the sdist's archive, downloaded once (under the
# lock, since both suites may ask at the same time).
fetched_sdist() {
    local name=$1 version=$2 pattern archive
    pattern="$(tr - _ <<<"$name")-$version.tar.gz"
    flock 9
    archive=$(find "$SDISTS" -maxdepth 1 -iname "$pattern" -print -quit)
    if [ -z "$archive" ]; then
        "$VENV/bin/pip" download -q --no-deps --no-binary "$name" -d "$SDISTS" "$name==$version" >&2
        archive=$(find "$SDISTS" -maxdepth 1 -iname "$pattern" -print -quit)
    fi
    echo "$archive"
} 9>"$LOCK"

# unpacked_sdist NAME VERSION: the sdist's directory (downloaded once).
unpacked_sdist() {
    local name=$1 version=$2 archive
    mkdir -p "$SDISTS"
    archive=$(fetched_sdist "$name" "$version")
    tar -xzf "$archive" -C "$WORK"
    find "$WORK" -maxdepth 1 -type d -iname "$(tr - _ <<<"$name")-$version"
}

# run_pytest RESULTS_DIR TESTS_DIR [ALONE...]: runs the suite in one pytest
# process with a deadline and our conftest (see python_conftest.py), each
# ALONE file (relative to TESTS_DIR) first in a process of its own, writing
# JUnit XML, and prints the TESTCASE lines.
run_pytest() {
    local results=$1 tests=$2 alone ignore=() n=0
    shift 2
    mkdir -p "$results"
    cp "$ROOT/scripts/clients/python_conftest.py" "$(dirname "$tests")/conftest.py"
    pytest_in() { # JUNIT ARGS...
        local junit=$1
        shift
        (cd "$(dirname "$tests")" &&
            timeout 300 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -W ignore \
                --junitxml="$junit" "$@" >>"$results/pytest.log" 2>&1) || true
    }
    for alone in "$@"; do
        n=$((n + 1))
        pytest_in "$results/alone-$n.xml" "$(basename "$tests")/$alone"
        ignore+=("--ignore=$(basename "$tests")/$alone")
    done
    pytest_in "$results/suite.xml" "$(basename "$tests")" "${ignore[@]}"
    grep -E "passed|failed" "$results/pytest.log" >&2 || true
    "$VENV/bin/python" "$ROOT/scripts/clients/junit_outcomes.py" "$results"/*.xml
}

# judge_outcomes OUTCOMES SUITE: prints the counts; against our module every
# failed test must match an entry of DOCUMENTED ("id prefix|message|other
# accepted message|reason"), each failure being one check.
judge_outcomes() {
    local outcomes=$1 suite=$2 line id message entry prefix want want2 reason matched
    echo "COUNTS: $suite $TARGET passed=$(grep -c '^TESTCASE: passed' "$outcomes" || true)" \
        "failed=$(grep -c '^TESTCASE: failed' "$outcomes" || true)" \
        "skipped=$(grep -c '^TESTCASE: skipped' "$outcomes" || true)"
    if [ "$(grep -c '^TESTCASE: passed' "$outcomes" || true)" -eq 0 ]; then
        fail "$suite: no test passed (did the suite run at all?)"
        return
    fi
    pass "$suite ran ($(grep -c '^TESTCASE: ' "$outcomes") tests)"
    [ "$TARGET" = mesign ] || return 0
    local -A used=()
    local i
    while read -r _ _ id message; do
        matched=
        for i in "${!DOCUMENTED[@]}"; do
            IFS='|' read -r prefix want want2 reason <<<"${DOCUMENTED[$i]}"
            if [[ "$id" == "$prefix"* ]] &&
                { [[ "$message" == *"$want"* ]] || { [ -n "$want2" ] && [[ "$message" == *"$want2"* ]]; }; }; then
                matched=$reason
                used[$i]=1
                break
            fi
        done
        if [ -n "$matched" ]; then
            pass "$suite: $id fails as documented: $matched"
        else
            fail "$suite: $id failed without a documented reason: $message"
        fi
    done < <(grep '^TESTCASE: failed' "$outcomes")
    # A documented failure that no longer happens is a stale claim about
    # the token: the list must shrink with it.
    for i in "${!DOCUMENTED[@]}"; do
        if [ -z "${used[$i]:-}" ]; then
            fail "$suite: documented failure did not occur, remove its entry: ${DOCUMENTED[$i]%%|*}"
        fi
    done
}
