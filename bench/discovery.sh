#!/usr/bin/env bash
# Discovery propagation benchmark: an endpoint change reaching N connected proxies.
# Starts `weft control` as its own process, connects N simulated proxies (real gRPC discovery
# streams, one connection each), registers endpoints one at a time and reports how long each
# change takes to reach every proxy (p50/p90/p99/max), and the control plane's memory.
# Usage: bench/discovery.sh [PROXIES] [CHANGES]     (defaults 1000 and 20)
set -euo pipefail
cd "$(dirname "$0")/.."
proxies="${1:-1000}"
changes="${2:-20}"
echo "==> building (release)"
nice -n 5 cargo build --release -q -p weft-cli -p weft-control --bins --examples
echo "==> $proxies proxies, $changes changes"
ulimit -n 65536 2>/dev/null || true
./target/release/examples/discovery-bench --weft target/release/weft --proxies "$proxies" --changes "$changes"
