#!/usr/bin/env bash
# Builds the release binaries and runs the throughput benchmark: ours vs
# SoftHSMv2 vs in-process aws-lc-rs, about four minutes on 2 cores with the
# defaults. The Markdown report is also written to target/bench-report.md;
# the README's table is its output. Arguments go to mesign-bench, e.g.
#   scripts/bench.sh --seconds 3 --rounds 5
#   scripts/bench.sh --find      # 10,000 objects per token, search latency;
#                                # ~15 min: SoftHSM creates ~13 objects/s
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --locked

report=target/bench-report.md
target/release/mesign-bench "$@" | tee "$report"
echo "report written to $report" >&2
