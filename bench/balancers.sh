#!/usr/bin/env bash
# Each load balancer against round robin, in one run of one weft-proxy build: 3 endpoints (demo
# apps, each behind its own server sidecar) and one client sidecar per balancer over the same 3
# endpoints (services[].backend_policy, as the control plane renders a BackendPolicy). The
# clients are loaded one after another, the order rotated each round. One line per point: rps,
# latency percentiles and the client sidecar's CPU ticks (utime + stime, 10 ms each) over
# warm-up + measurement, and the CPU per request that makes.
#
#   bench/balancers.sh [WEFT_PROXY]       # ROUNDS=3 by default; target/release/weft-proxy
#
# The hashing balancers read their key from every request: RingHash from the query parameter
# `user` (the load asks for /bytes/1024?user=alice), Maglev from the source IP. One key means
# every request goes to one endpoint: what is compared is the client's cost of reading the key
# and looking it up, with the load on one endpoint instead of three.
set -euo pipefail
cd "$(dirname "$0")/.."
PROXY=$(realpath "${1:-target/release/weft-proxy}")
BIN=target/release
W=$(mktemp -d "${TMPDIR:-/tmp}/weft-lb.XXXXXX"); mkdir -p $W/tls
$BIN/weft tls ca-create --dir $W/tls/ca >/dev/null
for sa in web api; do $BIN/weft tls cert-create --ca-dir $W/tls/ca --namespace default --service-account $sa --out $W/tls >/dev/null; done
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
ENDPOINTS=""
for i in 1 2 3; do
  $BIN/weft demo-app --name api-$i --listen 127.0.0.1:0 > $W/app-$i.log 2>&1 & pids+=($!)
  for t in $(seq 50); do grep -q listening $W/app-$i.log && break; sleep 0.1; done
  APP=$(sed -n 's/.*listening 127.0.0.1:\([0-9]*\).*/\1/p' $W/app-$i.log | head -1)
  HOP=$(free)
  cat > $W/server-$i.yaml <<YAML
identity: { cert: "$W/tls/api.pem", key: "$W/tls/api-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
inbound: { listen: "127.0.0.1:$HOP", ports: [{ port: $APP }] }
timeouts: { drain: 1s }
YAML
  $PROXY run --config $W/server-$i.yaml > $W/server-$i.log 2>&1 & pids+=($!)
  ENDPOINTS+="      - { address: \"127.0.0.1:$APP\", proxy: \"127.0.0.1:$HOP\", identity: \"spiffe://cluster.local/ns/default/sa/api\" }
"
done
declare -A POLICY=(
  [RoundRobin]=""
  [Random]="backend_policy: { load_balancer: { type: Random } }"
  [LeastRequest]="backend_policy: { load_balancer: { type: LeastRequest } }"
  [PeakEWMA]="backend_policy: { load_balancer: { type: PeakEWMA } }"
  [RingHash]="backend_policy: { load_balancer: { type: RingHash, hashOn: { queryParameter: user } } }"
  [Maglev]="backend_policy: { load_balancer: { type: Maglev, hashOn: { sourceIP: true } } }"
)
LBS="RoundRobin Random LeastRequest PeakEWMA RingHash Maglev"
declare -A CPORT CPID
for lb in $LBS; do
  H1=$(free)
  cat > $W/client-$lb.yaml <<YAML
identity: { cert: "$W/tls/web.pem", key: "$W/tls/web-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
outbound: { upstreams: [{ listen: "127.0.0.1:$H1", service: api }] }
services:
  - name: api
    ${POLICY[$lb]}
    endpoints:
$ENDPOINTS
timeouts: { drain: 1s }
YAML
  $PROXY run --config $W/client-$lb.yaml > $W/client-$lb.log 2>&1 & CPID[$lb]=$!; pids+=($!)
  CPORT[$lb]=$H1
done
for lb in $LBS; do for i in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:${CPORT[$lb]}/bytes/10" && break; sleep 0.1; done; done
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # balancer label args...
  local lb=$1 label=$2; shift 2
  local t0=$(ticks ${CPID[$lb]})
  local out=$($BIN/weft-bench load --addr 127.0.0.1:${CPORT[$lb]} --path '/bytes/1024?user=alice' --warmup 2s "$@" 2>&1)
  local t1=$(ticks ${CPID[$lb]})
  echo "$lb $label client_cpu_ticks=$((t1-t0)) :: $(echo "$out" | tr '\n' ' ' | tr -s ' ')"
}
ROUNDS=${ROUNDS:-3}
set -- $LBS
for r in $(seq $ROUNDS); do
  for lb in "$@"; do
    run $lb h1-1000rps --proto h1 -c 100 --rate 1000 --duration 8s
    run $lb h1-peak --proto h1 -c 100 --duration 8s
  done
  set -- "${@:2}" "$1"   # rotate the order
done
