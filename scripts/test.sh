#!/usr/bin/env bash
# Runs weft's whole test suite: unit, integration (127.0.0.1) and network-namespace tests.
# Installs the system packages the network tests need when run as root (as CI does); without root
# those tests skip with a message. Usage: ./scripts/test.sh [extra nextest/cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
# The py-consul test (crates/weft-cli/tests/consul_client.rs) and the external authorizer tests
# (crates/weft-proxy/tests/ext_authz.rs: grpcio, grpcio-tools) make venvs and pip-install from
# PyPI into target/: they need python3 with its venv module.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing ${need[*]} for the network-namespace and py-consul tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "==> ${need[*]} missing and not root: network-namespace tests will be skipped (and the py-consul test fails without python3-venv)"
  fi
fi

# weft's DNS asks for a 4 MiB UDP receive buffer, which the kernel caps at net.core.rmem_max
# (often 208 KiB); the DNS burst test needs it. Raise it when root and it is lower.
rmem_max=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo 0)
if [ "$rmem_max" -lt 4194304 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> raising net.core.rmem_max from $rmem_max to 4194304 (DNS UDP receive buffer)"
    sysctl -q -w net.core.rmem_max=4194304 || echo "==> could not raise net.core.rmem_max"
  else
    echo "==> net.core.rmem_max is $rmem_max (< 4 MiB) and not root: the DNS burst test may lose queries"
  fi
fi

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
