#!/usr/bin/env bash
# Installs the second JWT implementations the request-authentication tests verify tokens of
# (crates/weft-proxy/tests/jwt*.rs), under the directory given (the tests pass one in target/):
#   <dir>/venv   PyJWT + cryptography from PyPI (tokens for every algorithm)
#   <dir>/node   the npm package oidc-provider, a certified OpenID Provider, run on Node.js
# Idempotent: what is installed already is kept. Exit 3 (with a message on stderr) when node/npm
# or python3's venv module is missing, so the tests can skip saying why; any other failure is an
# error. Usage: scripts/jwt-peers.sh <dir> [python|node|all]
set -euo pipefail
dir=${1:?usage: jwt-peers.sh <dir> [python|node|all]}
what=${2:-all}
# Versions the tests were written against.
PYJWT="PyJWT[crypto]==2.10.1"
CRYPTOGRAPHY="cryptography==46.0.3"
OIDC_PROVIDER="oidc-provider@9.13.3"
mkdir -p "$dir"
# Tests run in parallel processes: one installs, the others wait for it.
exec 9>"$dir/.lock"
flock 9

if [ "$what" = python ] || [ "$what" = all ]; then
  if ! "$dir/venv/bin/python" -c 'import jwt, cryptography' >/dev/null 2>&1; then
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || { echo "python3 with its venv module is needed (apt-get install python3 python3-venv)" >&2; exit 3; }
    rm -rf "$dir/venv.partial"
    python3 -m venv "$dir/venv.partial"
    "$dir/venv.partial/bin/python" -m pip install --quiet --disable-pip-version-check "$PYJWT" "$CRYPTOGRAPHY"
    rm -rf "$dir/venv"
    mv "$dir/venv.partial" "$dir/venv"
  fi
fi

if [ "$what" = node ] || [ "$what" = all ]; then
  if [ ! -f "$dir/node/node_modules/oidc-provider/package.json" ]; then
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "node and npm are needed for the oidc-provider test (Node.js 20: apt-get install nodejs npm)" >&2; exit 3; }
    rm -rf "$dir/node.partial"
    mkdir -p "$dir/node.partial"
    (cd "$dir/node.partial" && echo '{"name":"weft-jwt-peers","private":true,"type":"module"}' > package.json \
      && npm install --silent --no-audit --no-fund "$OIDC_PROVIDER" >/dev/null)
    rm -rf "$dir/node"
    mv "$dir/node.partial" "$dir/node"
  fi
fi
