#!/usr/bin/env bash
# East-west gateway cost (issue 16): the same client sidecar calling the same server sidecar and
# app, four ways, side by side, in interleaved rounds:
#   direct      generator -> demo app (no proxy)
#   in-cluster  generator -> client sidecar ══ mTLS HTTP/2 ══> server sidecar -> app
#   weft-gw     generator -> client sidecar ══> weft-proxy mode: gateway (SNI passthrough) ══> server sidecar -> app
#   haproxy-gw  generator -> client sidecar ══> HAProxy mode tcp, routing on req.ssl_sni ══> server sidecar -> app
# The three client sidecars differ only in the endpoint's `proxy` address (the server sidecar, or
# a gateway in front of it) and its `cluster` (the gateways route `*.east.weft`). Every proxy is a
# release build of `weft proxy run` (target/release/weft); HAProxy 2.6 with nbthread 2.
# Prints, per point, rps and latency percentiles from `weft-bench load`, and CPU-ms per 1,000
# requests of the client sidecar, the gateway and the server sidecar (utime + stime from
# /proc/PID/stat over warm-up + measurement).
#
#   bench/gateway.sh                     # ROUNDS=3 DURATION=10s RATE=1000 by default
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10s}; RATE=${RATE:-1000}
BIN=target/release
if [ "${SKIP_BUILD:-}" != 1 ]; then
  echo "==> building (release): weft, weft-bench" >&2
  nice -n 5 cargo build --release -q -p weft-cli --bin weft -p weft-bench --bin weft-bench
fi
command -v haproxy >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy >/dev/null; }
W=$(mktemp -d "${TMPDIR:-/tmp}/weft-gw.XXXXXX"); mkdir -p $W/tls
$BIN/weft tls ca-create --dir $W/tls/ca >/dev/null
for sa in web api east-west-gateway; do
  $BIN/weft tls cert-create --ca-dir $W/tls/ca --namespace default --service-account $sa --out $W/tls >/dev/null
done
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
$BIN/weft demo-app --name api --listen 127.0.0.1:0 > $W/app.log 2>&1 & APID=$!; pids+=($!)
for i in $(seq 50); do grep -q listening $W/app.log && break; sleep 0.1; done
APP=$(sed -n 's/.*listening 127.0.0.1:\([0-9]*\).*/\1/p' $W/app.log | head -1)
HOP=$(free); GW=$(free); HGW=$(free)
ID="spiffe://cluster.local/ns/default/sa/api"
cat > $W/server.yaml <<EOF
cluster: east
identity: { cert: "$W/tls/api.pem", key: "$W/tls/api-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
inbound: { listen: "127.0.0.1:$HOP", ports: [{ port: $APP }] }
timeouts: { drain: 1s }
EOF
cat > $W/gateway.yaml <<EOF
mode: gateway
cluster: east
identity: { cert: "$W/tls/east-west-gateway.pem", key: "$W/tls/east-west-gateway-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
gateway: { listen: "127.0.0.1:$GW" }
services:
  - name: api
    endpoints: [{ address: "127.0.0.1:$APP", proxy: "127.0.0.1:$HOP", identity: "$ID", cluster: east }]
timeouts: { drain: 1s }
EOF
cat > $W/haproxy.cfg <<EOF
global
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend eastwest
  bind 127.0.0.1:$HGW
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend api if { req.ssl_sni -m end .api.default.east.weft }
backend api
  server s1 127.0.0.1:$HOP
EOF
client() { # name listen-port endpoint-proxy client-cluster
  cat > $W/client-$1.yaml <<EOF
cluster: $4
identity: { cert: "$W/tls/web.pem", key: "$W/tls/web-key.pem", bundle: "$W/tls/bundle.pem" }
admin: { listen: "127.0.0.1:0" }
outbound: { upstreams: [{ listen: "127.0.0.1:$2", service: api, port: $APP }] }
services:
  - name: api
    endpoints: [{ address: "127.0.0.1:$APP", proxy: "$3", identity: "$ID", cluster: east }]
timeouts: { drain: 1s }
EOF
}
declare -A PORT PIDS
PORT[direct]=$APP; PIDS[direct]=""
P=$(free); client in-cluster $P 127.0.0.1:$HOP east; PORT[in-cluster]=$P
P=$(free); client weft-gw $P 127.0.0.1:$GW west; PORT[weft-gw]=$P
P=$(free); client haproxy-gw $P 127.0.0.1:$HGW west; PORT[haproxy-gw]=$P
$BIN/weft proxy run --config $W/server.yaml > $W/server.log 2>&1 & SPID=$!; pids+=($!)
$BIN/weft proxy run --config $W/gateway.yaml > $W/gateway.log 2>&1 & GPID=$!; pids+=($!)
haproxy -db -f $W/haproxy.cfg > $W/haproxy.log 2>&1 & HPID=$!; pids+=($!)
declare -A CPID
for s in in-cluster weft-gw haproxy-gw; do
  $BIN/weft proxy run --config $W/client-$s.yaml > $W/client-$s.log 2>&1 & CPID[$s]=$!; pids+=($!)
done
PIDS[in-cluster]="${CPID[in-cluster]} - $SPID"
PIDS[weft-gw]="${CPID[weft-gw]} $GPID $SPID"
PIDS[haproxy-gw]="${CPID[haproxy-gw]} $HPID $SPID"
for s in in-cluster weft-gw haproxy-gw; do
  ok=; for i in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:${PORT[$s]}/bytes/10 && { ok=1; break; }; sleep 0.1; done
  [ -n "$ok" ] || { echo "setup $s does not answer; logs in $W" >&2; cat $W/*.log >&2; exit 1; }
done
ticks() { [ "$1" = - ] && { echo 0; return; }; awk '{print $14+$15}' /proc/$1/stat; }
hz=$(getconf CLK_TCK)
run() { # setup label args...
  local s=$1 label=$2; shift 2
  local ids=(${PIDS[$s]}) before=() after=()
  for p in "${ids[@]}"; do before+=($(ticks $p)); done
  local out; out=$($BIN/weft-bench load --addr 127.0.0.1:${PORT[$s]} --warmup 2s --duration $DURATION --json "$@")
  for p in "${ids[@]}"; do after+=($(ticks $p)); done
  local cpu=""
  if [ ${#ids[@]} -gt 0 ]; then
    local names=(client gateway server)
    for i in 0 1 2; do
      [ "${ids[$i]}" = - ] && continue
      cpu+=" ${names[$i]}_ticks=$(( ${after[$i]} - ${before[$i]} ))"
    done
  fi
  echo "$s $label$cpu :: $out"
}
echo "# $(date -u '+%F %T') UTC, $(nproc) CPUs; ROUNDS=$ROUNDS DURATION=$DURATION RATE=$RATE; CLK_TCK=$hz"
echo "# other processes at start: $(ps -eo pcpu,comm --sort=-pcpu | sed -n 2,6p | tr -s ' ' | tr '\n' ';')"
for r in $(seq $ROUNDS); do
  order="direct in-cluster weft-gw haproxy-gw"
  (( r % 2 )) || order="haproxy-gw weft-gw in-cluster direct"
  for s in $order; do run $s "r$r-h1-${RATE}rps" --proto h1 -c 100 --rate $RATE; done
  for s in $order; do run $s "r$r-h1-peak" --proto h1 -c 100; done
done
