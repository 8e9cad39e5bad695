#!/usr/bin/env bash
# DNS benchmark: weft's DNS server and dnsmasq side by side, answering the same names, measured
# with dnsperf at 1, 64 and 512 queries in flight. Reports queries per second, lost queries and
# server CPU, and writes bench/RESULTS-dns.md.
#
# weft's side is crates/weft-dns/examples/dns-serve.rs: the DnsServer that `weft control` runs,
# on a multi-threaded runtime with one worker per CPU, serving SERVICES synthetic services; it
# writes the same names as a hosts file, which dnsmasq answers from (no upstream, no cache limit
# in the way: hosts entries are always answered locally).
#
# Usage: bench/dns.sh [SECONDS per point (10)] [ROUNDS (2)] [SERVICES (1000)]
# Env: PROFILE=debug to skip the release build (the results then say debug).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
rounds="${2:-2}"
services="${3:-1000}"
profile="${PROFILE:-release}"
inflight=(1 64 512)

need=()
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need[*]}"
    # dnsmasq-base: the binary only, without the Debian service that would take port 53.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "need ${need[*]} (Debian: apt-get install dnsperf dnsmasq-base)" >&2
    exit 1
  fi
fi
dnsmasq_bin=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)

# The same 4 MiB receive buffer for both servers (dnsmasq has no setting: it gets the kernel
# default, which is what a stock dnsmasq runs with).
rmem_max=$(cat /proc/sys/net/core/rmem_max)
if [ "$rmem_max" -lt 4194304 ] && [ "$(id -u)" = 0 ]; then
  sysctl -q -w net.core.rmem_max=4194304
  rmem_max=4194304
fi

if [ "$profile" = release ]; then
  echo "==> building crates/weft-dns/examples/dns-serve (release)"
  nice -n 5 cargo build --release -q -p weft-dns --example dns-serve
  serve=target/release/examples/dns-serve
else
  cargo build -q -p weft-dns --example dns-serve
  serve=target/debug/examples/dns-serve
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# A free UDP+TCP port on 127.0.0.1, for dnsmasq (weft binds port 0 and says where).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$serve" "$services" "$tmp/hosts" > "$tmp/weft.out" 2> "$tmp/weft.err" &
weft_pid=$!
pids+=("$weft_pid")
for _ in $(seq 100); do grep -q '^listening' "$tmp/weft.out" 2>/dev/null && break; sleep 0.1; done
weft_addr=$(awk '/^listening/ {print $2}' "$tmp/weft.out")
[ -n "$weft_addr" ] || { echo "dns-serve did not start:" >&2; cat "$tmp/weft.err" >&2; exit 1; }
weft_port=${weft_addr##*:}

dnsmasq_port=$(free_port)
"$dnsmasq_bin" --keep-in-foreground --no-daemon --conf-file=/dev/null --no-resolv --no-hosts \
  --addn-hosts="$tmp/hosts" --listen-address=127.0.0.1 --bind-interfaces --port="$dnsmasq_port" \
  --user="$(id -un)" --pid-file= --log-facility=/dev/null --dns-forward-max=1000 \
  > "$tmp/dnsmasq.out" 2>&1 &
dnsmasq_pid=$!
pids+=("$dnsmasq_pid")

# Queries: every service under both name forms, A records, shuffled.
for i in $(seq 0 $((services - 1))); do
  echo "svc-$i.service.consul A"
  echo "svc-$i.default.svc.cluster.local A"
done | shuf --random-source=<(yes) > "$tmp/queries"

# Both answer before we measure.
for port in "$weft_port" "$dnsmasq_port"; do
  for _ in $(seq 100); do
    echo "svc-0.service.consul A" | dnsperf -s 127.0.0.1 -p "$port" -n 1 -t 1 2>/dev/null | grep -q 'Queries completed: *1 ' && break
    sleep 0.1
  done
done

# Datagrams the kernel dropped for want of receive-buffer room, machine-wide (any socket).
rcvbuf_errors() { awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) col[$i] = i; h = 1 } else print $col["RcvbufErrors"] }' /proc/net/snmp; }

cpu_ms() { awk '{print ($14 + $15) * 1000 / '"$(getconf CLK_TCK)"'}' "/proc/$1/stat"; }

# One point: prints "qps sent lost cpu_ms avg_latency_us kernel_drops". dnsperf's own socket
# buffers are 4 MiB (-b, in KiB): with its default, dnsperf itself drops answers at 512 in flight.
point() {
  local port=$1 pid=$2 q=$3 out before after drops_before drops_after
  before=$(cpu_ms "$pid")
  drops_before=$(rcvbuf_errors)
  out=$(dnsperf -s 127.0.0.1 -p "$port" -d "$tmp/queries" -l "$seconds" -q "$q" -c 1 -t 2 -b 4096 2>&1)
  drops_after=$(rcvbuf_errors)
  after=$(cpu_ms "$pid")
  echo "$out" | awk -v cpu="$(awk -v a="$after" -v b="$before" 'BEGIN {print a - b}')" -v drops=$((drops_after - drops_before)) '
    /Queries sent:/ {sent=$3} /Queries lost:/ {lost=$3} /Queries per second:/ {qps=$4} /Average Latency/ {lat=$4 * 1e6}
    END {printf "%s %s %s %s %s %s\n", qps, sent, lost, cpu, lat, drops}'
}

echo "==> $rounds rounds of ${seconds}s per point, $services services ($((services * 2)) names), load $(cut -d' ' -f1-3 /proc/loadavg)"
declare -A qps sent lost cpu lat drops
for r in $(seq "$rounds"); do
  for q in "${inflight[@]}"; do
    for server in weft dnsmasq; do
      if [ "$server" = weft ]; then port=$weft_port; pid=$weft_pid; else port=$dnsmasq_port; pid=$dnsmasq_pid; fi
      read -r p_qps p_sent p_lost p_cpu p_lat p_drops < <(point "$port" "$pid" "$q")
      printf '    round %d  %-7s %4d in flight: %10.0f qps  %9d sent  %6d lost  %7.0f ms CPU  %6.0f us avg  %d kernel drops\n' \
        "$r" "$server" "$q" "$p_qps" "$p_sent" "$p_lost" "$p_cpu" "$p_lat" "$p_drops"
      key="$server/$q"
      qps[$key]="${qps[$key]:-} $p_qps"
      sent[$key]=$(( ${sent[$key]:-0} + p_sent ))
      lost[$key]=$(( ${lost[$key]:-0} + p_lost ))
      lat[$key]="${lat[$key]:-} $p_lat"
      drops[$key]=$(( ${drops[$key]:-0} + p_drops ))
      cpu[$key]=$(awk -v a="${cpu[$key]:-0}" -v b="$p_cpu" 'BEGIN {print a + b}')
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

{
  echo "# DNS benchmark: weft vs dnsmasq"
  echo
  echo "Written by \`bench/dns.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')),"
  echo "load average at the start $(cut -d' ' -f1-3 /proc/loadavg) (other processes share the machine)."
  echo "weft: \`crates/weft-dns/examples/dns-serve\` ($profile build), the \`DnsServer\` that \`weft control\` runs, with"
  echo "its defaults (4 MiB UDP receive buffer, one UDP task per runtime worker). dnsmasq $("$dnsmasq_bin" --version | head -1 | awk '{print $3}') answering"
  echo "the same $((services * 2)) names from a hosts file (\`--addn-hosts\`, no upstream), kernel-default receive buffer."
  echo "Load: dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}') over UDP from one socket (4 MiB socket buffers, \`-b 4096\`), A queries for every"
  echo "name in shuffled order, ${seconds} s per point, $rounds rounds alternating the servers; net.core.rmem_max = $rmem_max."
  echo "qps and latency are medians of the rounds; lost (dnsperf: no answer within 2 s), kernel drops"
  echo "(UDP RcvbufErrors, machine-wide) and CPU are summed over the rounds (CPU: the server's user +"
  echo "system time, in ms per 1,000 answered queries). At 1 in flight dnsperf paces itself (it waits"
  echo "between queries), so qps there says little; latency is the figure to read."
  echo
  echo "| in flight | server | qps (median) | avg latency µs (median) | queries sent | lost | kernel drops | CPU ms / 1k queries |"
  echo "|---:|---|---:|---:|---:|---:|---:|---:|"
  for q in "${inflight[@]}"; do
    for server in weft dnsmasq; do
      key="$server/$q"
      m=$(echo "${qps[$key]}" | median)
      answered=$(( sent[$key] - lost[$key] ))
      per_k=$(awk -v c="${cpu[$key]}" -v n="$answered" 'BEGIN {print (n > 0) ? c * 1000 / n : 0}')
      l=$(echo "${lat[$key]}" | median)
      printf '| %d | %s | %.0f | %.0f | %d | %d | %d | %.1f |\n' "$q" "$server" "$m" "$l" "${sent[$key]}" "${lost[$key]}" "${drops[$key]}" "$per_k"
    done
  done
} > "$tmp/results.md"
cat "$tmp/results.md"
if [ -f bench/RESULTS-dns.md ] && grep -q '^## Notes' bench/RESULTS-dns.md; then
  # Keep the hand-written notes below the table.
  sed -n '/^## Notes/,$p' bench/RESULTS-dns.md > "$tmp/notes"
  { cat "$tmp/results.md"; echo; cat "$tmp/notes"; } > bench/RESULTS-dns.md
else
  cp "$tmp/results.md" bench/RESULTS-dns.md
fi
echo "==> written to bench/RESULTS-dns.md"
