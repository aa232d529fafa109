# Shared by the end-to-end scripts (sourced, not run): step bookkeeping and
# the teardown of a daemon the script started. The sourcing script sets WORK
# (its scratch directory) first.

PASSED=0
FAILED=0
FAILURES=()

pass() { PASSED=$((PASSED + 1)); echo "PASS: $1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); echo "FAIL: $1"; }

# check NAME CMD...: CMD must succeed; its output goes to $WORK/step.log,
# whose tail is shown when it fails.
check() {
    local name=$1
    shift
    if "$@" >"$WORK/step.log" 2>&1; then
        pass "$name"
    else
        fail "$name"
        sed 's/^/    | /' "$WORK/step.log" | tail -n 25
    fi
}

# end_daemon PID SECONDS: SIGTERM, up to SECONDS for it to exit, then
# SIGKILL; reaps it. For teardown: never fails.
end_daemon() {
    local pid=$1 deadline=$((SECONDS + $2))
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
