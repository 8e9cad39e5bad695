#!/usr/bin/env bash
# What traffic management costs the proxy (issue 17's benchmark), side by side in one run of one
# build: one client sidecar per setup, all calling the same endpoints (demo apps, each behind its
# own server sidecar), loaded one after another with the order rotated each round.
#
#   none        no route, no policy: the plain meshed request
#   base        the same through BASE_PROXY (another weft-proxy build, e.g. today's main), when set
#   route100    100 HTTPRoute rules (7 routes); the request matches only the one tried last
#               (every other rule's match is tried first: the worst case of the table)
#   Random, LeastRequest, PeakEWMA, RingHash, Maglev
#               a BackendPolicy's balancer over the 3 endpoints, against none's round robin
#               (RingHash hashes the query parameter `user`, Maglev the source IP: with one key
#               every request goes to one endpoint)
#   fail1       3 endpoints that fail 1 % of requests (`weft demo-app --fail-every 100`), no retry:
#               1 % of answers are 503
#   retry1      the same endpoints with a ResiliencePolicy retrying 5xx once: every answer is 200,
#               and 1 % of requests take a second try
#
#   bench/traffic.sh [BIN_DIR]      # BIN_DIR holds weft, weft-proxy, weft-bench (target/release)
#   ROUNDS=3 RATE=1000 DURATION=10s BASE_PROXY=/path/to/weft-proxy bench/traffic.sh
#
# One line per point: rps, latency percentiles, errors, the client sidecar's CPU (utime + stime,
# 10 ms ticks) over the measured window only (a warm-up run precedes it) and the CPU per request
# it makes. Only the client sidecar differs between setups, so only its CPU is counted. Results
# in bench/RESULTS.md ("Traffic management cost").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release}")
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
RATE=${RATE:-1000}
W=$(mktemp -d "${TMPDIR:-/tmp}/weft-traffic.XXXXXX"); mkdir -p $W/tls
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
$BIN/weft tls ca-create --dir $W/tls/ca >/dev/null
for sa in web api; do $BIN/weft tls cert-create --ca-dir $W/tls/ca --namespace default --service-account $sa --out $W/tls >/dev/null; done
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

endpoints() { # name fail_every: three apps behind their own server sidecars; prints the YAML list
  local name=$1 fail=$2 i
  for i in 1 2 3; do
    $BIN/weft demo-app --name $name-$i --listen 127.0.0.1:0 --fail-every $fail > $W/app-$name-$i.log 2>&1 & pids+=($!)
    for t in $(seq 50); do grep -q listening $W/app-$name-$i.log && break; sleep 0.1; done
    local app=$(sed -n 's/.*listening 127.0.0.1:\([0-9]*\).*/\1/p' $W/app-$name-$i.log | head -1) hop=$(free)
    cat > $W/server-$name-$i.yaml <<YAML
identity: { cert: "$W/tls/api.pem", key: "$W/tls/api-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
inbound: { listen: "127.0.0.1:$hop", ports: [{ port: $app }] }
timeouts: { drain: 1s }
YAML
    $BIN/weft-proxy run --config $W/server-$name-$i.yaml > $W/server-$name-$i.log 2>&1 & pids+=($!)
    echo "      - { address: \"127.0.0.1:$app\", proxy: \"127.0.0.1:$hop\", identity: \"spiffe://cluster.local/ns/default/sa/api\" }"
  done
}
HEALTHY=$(endpoints api 0)
FAILING=$(endpoints api 100)

# 100 rules in 7 HTTPRoutes (the Gateway API allows 16 rules a route): 99 by a longer path prefix
# (/rule-000/ ... /rule-098/, so by the Gateway API's precedence they sort before it), then
# /bytes (the benchmark's path), tried last.
ROUTE100="    routes:"
for r in $(seq 0 99); do
  if [ $((r % 16)) = 0 ]; then
    ROUTE100+="
      - name: hundred-$((r / 16))
        namespace: default
        kind: HTTPRoute
        spec:
          parentRefs: [{ name: api }]
          rules:"
  fi
  prefix=$(printf '/rule-%03d/' $r); [ $r = 99 ] && prefix=/bytes
  ROUTE100+="
            - { matches: [{ path: { type: PathPrefix, value: $prefix } }], backendRefs: [{ name: api }] }"
done

declare -A EXTRA=(
  [none]="" [base]="" [route100]="$ROUTE100"
  [Random]="    backend_policy: { load_balancer: { type: Random } }"
  [LeastRequest]="    backend_policy: { load_balancer: { type: LeastRequest } }"
  [PeakEWMA]="    backend_policy: { load_balancer: { type: PeakEWMA } }"
  [RingHash]="    backend_policy: { load_balancer: { type: RingHash, hashOn: { queryParameter: user } } }"
  [Maglev]="    backend_policy: { load_balancer: { type: Maglev, hashOn: { sourceIP: true } } }"
  [fail1]=""
  [retry1]="    resilience: { retry: { attempts: 1, retryOn: [5xx] } }"
)
SETUPS="none route100 Random LeastRequest PeakEWMA RingHash Maglev fail1 retry1"
[ -n "${BASE_PROXY:-}" ] && SETUPS="base $SETUPS"
declare -A CPORT CPID
for s in $SETUPS; do
  port=$(free); eps=$HEALTHY; proxy=$BIN/weft-proxy
  case $s in fail1|retry1) eps=$FAILING ;; base) proxy=$(realpath "$BASE_PROXY") ;; esac
  cat > $W/client-$s.yaml <<YAML
identity: { cert: "$W/tls/web.pem", key: "$W/tls/web-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
outbound: { upstreams: [{ listen: "127.0.0.1:$port", service: api }] }
services:
  - name: api
    endpoints:
$eps
${EXTRA[$s]}
timeouts: { drain: 1s }
YAML
  $proxy run --config $W/client-$s.yaml > $W/client-$s.log 2>&1 & CPID[$s]=$!; pids+=($!)
  CPORT[$s]=$port
done
for s in $SETUPS; do
  ok=""
  for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:${CPORT[$s]}/bytes/10" && ok=1 && break; sleep 0.1; done
  [ -n "$ok" ] || { echo "setup $s does not answer"; cat $W/client-$s.log; exit 1; }
done

ticks() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # setup
  local s=$1 addr=127.0.0.1:${CPORT[$1]}
  local args=(--addr $addr --path '/bytes/1024?user=alice' --proto h1 -c 100 --rate $RATE --warmup 0s)
  $BIN/weft-bench load "${args[@]}" --duration $WARMUP >/dev/null 2>&1
  local t0=$(ticks ${CPID[$s]})
  local out=$($BIN/weft-bench load "${args[@]}" --duration $DURATION 2>&1 | tr '\n' ' ' | tr -s ' ')
  local t1=$(ticks ${CPID[$s]})
  # Every answer counts (fail1's 503s too).
  local n=$(echo "$out" | sed -n 's/.* ok \([0-9]*\) errors \([0-9]*\).*/\1 \2/p' | awk '{print $1 + $2}')
  local per=$(awk -v t=$((t1-t0)) -v n="${n:-0}" 'BEGIN { if (n > 0) printf "%.1f", t * 10000 / n; else print "-" }')
  echo "$s client_cpu_ticks=$((t1-t0)) cpu_us_per_request=$per :: $out"
}
echo "# $(date -u '+%F %T') UTC, $(nproc) CPUs, commit $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)"
set -- $SETUPS
for r in $(seq $ROUNDS); do
  for s in "$@"; do run $s; done
  set -- "${@:2}" "$1"
done
