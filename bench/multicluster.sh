#!/usr/bin/env bash
# Multi-cluster scale simulation (issue 16): N `weft control` processes on loopback, each with
# SERVICES exported services and ENDPOINTS endpoints, linked as a full mesh (or every cluster
# with one hub), two real proxies following cluster c0; reports each control plane's RSS, the
# time for a full import, and how long an endpoint change in c1 takes to reach c0's proxies.
# See crates/weft-bench/src/mcscale.rs for exactly what is measured.
#
#   bench/multicluster.sh                        # 5 clusters, full mesh, 1000 / 10000, 100 changes
#   bench/multicluster.sh --topology hub         # c0 linked with c1..c4, both ways; no spoke-to-spoke links
#   bench/multicluster.sh --clusters 3 --services 200 --endpoints 2000 --changes 20
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIP_BUILD:-}" != 1 ]; then
  echo "==> building (release): weft, weft-bench" >&2
  nice -n 5 cargo build --release -q -p weft-cli --bin weft -p weft-bench --bin weft-bench
fi
ulimit -n 65536 2>/dev/null || true
echo "# $(date -u '+%F %T') UTC, $(nproc) CPUs, commit $(git rev-parse --short HEAD)"
echo "# other processes at start: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,6p | tr -s ' ' | tr '\n' ';')"
exec target/release/weft-bench mcscale --weft "${WEFT:-target/release/weft}" "$@"
