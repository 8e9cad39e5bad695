#!/usr/bin/env bash
# weft data-plane benchmark: direct vs the weft sidecar pair vs HAProxy pairs vs an nginx pair,
# every pair doing the same mTLS hop, HTTP/1.1 and HTTP/2, 1 KiB bodies, 1,000 rps and peak, in
# one run on this machine with one load generator. Writes bench/RESULTS.md; see bench/README.md.
#
#   bench/run.sh                      # the whole suite (~25 minutes on 2 cores)
#   bench/run.sh --duration 5s        # any `weft-bench suite` option is passed through
#   bench/run.sh --setups direct,weft --protos h1 --out /tmp/r.md
#
# Everything listens on 127.0.0.1 (free ports), lives in a temporary directory, and is stopped and
# removed at the end, also on failure or Ctrl-C.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$PATH:/usr/sbin:/sbin"

# Tools: HAProxy and nginx (the pairs), openssl (their server certificate), wrk and h2load (the
# cross-check). Installed only when missing.
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v openssl >/dev/null || missing+=(openssl)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}" >&2
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

echo "==> building release binaries (weft, weft-bench; weft-proxy with the release-proxy profile)" >&2
nice -n 10 cargo build --release --quiet -p weft-cli -p weft-bench
# The proxy as deployed: whole-program LTO, see [profile.release-proxy] in Cargo.toml. (Its first
# build compiles the dependencies once more, for that profile.)
nice -n 10 cargo build --profile release-proxy --quiet -p weft-proxy
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target="${target:-$root/target}"

work=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench.XXXXXX")
# The suite takes one directory with `weft` and `weft-proxy`.
bin="$work/bin"
mkdir "$bin"
ln -s "$target/release/weft" "$target/release/weft-bench" "$bin/"
ln -s "$target/release-proxy/weft-proxy" "$bin/weft-proxy"
suite_pid=
cleanup() {
    # The suite stops its own processes; this covers it being killed before it could.
    if [ -n "$suite_pid" ] && kill -0 "$suite_pid" 2>/dev/null; then
        kill -TERM "$suite_pid" 2>/dev/null || true
        wait "$suite_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> running the suite (scratch dir $work)" >&2
nice -n 10 "$bin/weft-bench" suite \
    --bin-dir "$bin" \
    --conf-dir "$root/bench/conf" \
    --work-dir "$work" \
    --out "$root/bench/RESULTS.md" \
    --cross-check \
    --command "bench/run.sh${*:+ $*}" \
    "$@" &
suite_pid=$!
wait "$suite_pid"
suite_pid=
