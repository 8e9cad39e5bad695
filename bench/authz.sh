#!/usr/bin/env bash
# The CPU cost of AuthorizationPolicies at the server sidecar: one demo app behind two server
# sidecars, one with no policy and one with 100 (inbound.authorization, the JSON the control
# plane sends), each called by its own client sidecar. The pairs are loaded one after another, the
# order rotated each round. One line per point: rps, latency percentiles and the *server*
# sidecar's CPU ticks (utime + stime, 10 ms each) over warm-up + measurement; CPU per request is
# ticks × 10 ms / requests.
#
#   bench/authz.sh [BIN_DIR]     # ROUNDS=3; BIN_DIR holds weft, weft-proxy, weft-bench (target/release)
#
# The 100 policies are the worst case for a request that is allowed. Every one of them is
# evaluated: 50 DENY policies on paths the load never asks for, 49 ALLOW policies for other
# namespaces' principals, and last one ALLOW for the caller on /bytes/*. All are checked in
# order, and only the last matches.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release}")
W=$(mktemp -d "${TMPDIR:-/tmp}/weft-authz.XXXXXX"); mkdir -p $W/tls
$BIN/weft tls ca-create --dir $W/tls/ca >/dev/null
for sa in web api; do $BIN/weft tls cert-create --ca-dir $W/tls/ca --namespace default --service-account $sa --out $W/tls >/dev/null; done
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
$BIN/weft demo-app --name api --listen 127.0.0.1:0 > $W/app.log 2>&1 & pids+=($!)
for t in $(seq 50); do grep -q listening $W/app.log && break; sleep 0.1; done
APP=$(sed -n 's/.*listening 127.0.0.1:\([0-9]*\).*/\1/p' $W/app.log | head -1)
POLICIES=$(python3 - <<'PY'
import json
ps = []
for i in range(50):
    ps.append({"name": f"default/deny-{i}", "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": [f"/blocked-{i}/*"], "methods": ["POST"]}}]}]}})
for i in range(49):
    ps.append({"name": f"default/allow-{i}", "spec": {"rules": [{"from": [{"source": {"principals": [f"spiffe://cluster.local/ns/other-{i}/*"]}}]}]}})
ps.append({"name": "default/web", "spec": {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/web"]}}], "to": [{"operation": {"paths": ["/bytes/*"], "methods": ["GET"]}}]}]}})
print(json.dumps({"policies": ps}))
PY
)
declare -A AUTHZ=([none]="" [p100]="authorization: $POLICIES")
SETUPS="none p100"
declare -A CPORT SPID
for s in $SETUPS; do
  HOP=$(free); H1=$(free)
  cat > $W/server-$s.yaml <<YAML
identity: { cert: "$W/tls/api.pem", key: "$W/tls/api-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
inbound:
  listen: "127.0.0.1:$HOP"
  ports: [{ port: $APP }]
  ${AUTHZ[$s]}
timeouts: { drain: 1s }
YAML
  $BIN/weft-proxy run --config $W/server-$s.yaml > $W/server-$s.log 2>&1 & SPID[$s]=$!; pids+=($!)
  cat > $W/client-$s.yaml <<YAML
identity: { cert: "$W/tls/web.pem", key: "$W/tls/web-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
outbound: { upstreams: [{ listen: "127.0.0.1:$H1", service: api }] }
services:
  - name: api
    endpoints:
      - { address: "127.0.0.1:$APP", proxy: "127.0.0.1:$HOP", identity: "spiffe://cluster.local/ns/default/sa/api" }
timeouts: { drain: 1s }
YAML
  $BIN/weft-proxy run --config $W/client-$s.yaml > $W/client-$s.log 2>&1 & pids+=($!)
  CPORT[$s]=$H1
done
for s in $SETUPS; do
  ok=""
  for i in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:${CPORT[$s]}/bytes/10" && ok=1 && break; sleep 0.1; done
  [ -n "$ok" ] || { echo "setup $s does not answer 200"; cat $W/server-$s.log; exit 1; }
done
# The 100-policy server must deny what its policies deny (else the comparison is void).
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${CPORT[p100]}/other")
[ "$code" = 403 ] || { echo "p100: /other answered $code, want 403"; exit 1; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
run() { # setup label args...
  local s=$1 label=$2; shift 2
  local t0=$(ticks ${SPID[$s]})
  local out=$($BIN/weft-bench load --addr 127.0.0.1:${CPORT[$s]} --path '/bytes/1024' --warmup 2s "$@" 2>&1)
  local t1=$(ticks ${SPID[$s]})
  echo "$s $label server_cpu_ticks=$((t1-t0)) :: $(echo "$out" | tr '\n' ' ' | tr -s ' ')"
}
ROUNDS=${ROUNDS:-3}
set -- $SETUPS
for r in $(seq $ROUNDS); do
  for s in "$@"; do
    run $s h1-1000rps --proto h1 -c 100 --rate 1000 --duration 8s
    run $s h1-peak --proto h1 -c 100 --duration 8s
  done
  set -- "${@:2}" "$1"
done
