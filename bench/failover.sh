#!/usr/bin/env bash
# Failover as a client sees it: a test-kit cluster (a primary and two replicas) behind the
# meridian binary with its default settings, a client writing a numbered row every 20 ms and
# reading every 20 ms through Meridian, and the primary SIGKILLed. Prints per trial and as
# median/worst: write and read unavailability, acknowledged writes lost, duplicates and client
# errors after the kill; first with asynchronous, then with synchronous replication.
#
# usage: bench/failover.sh          (env: TRIALS=5)
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS=${TRIALS:-5}

echo "building (release)..."
cargo build --release -q -p meridian --bin meridian --example failover_bench
target=${CARGO_TARGET_DIR:-target}/release

"$target/examples/failover_bench" --meridian "$target/meridian" --trials "$TRIALS"
echo
"$target/examples/failover_bench" --meridian "$target/meridian" --trials "$TRIALS" --synchronous
