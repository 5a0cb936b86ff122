#!/usr/bin/env bash
# Installs the client SDKs the SDK tests drive deja with: OpenAI's Python SDK from PyPI
# (hash-pinned) into tests/sdk/.venv, Portkey's Node SDK and playwright-core from npm
# (package-lock.json) into tests/sdk/node/node_modules, and Debian's chromium for the dashboard
# test (playwright-core drives it; no browser is downloaded from elsewhere). Idempotent: skipped
# when what is installed matches the pins.
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "sdk: python clients present"
else
    python3 -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
        --require-hashes -r requirements.txt
    echo "$want" > "$stamp"
    echo "sdk: python clients installed in tests/sdk/.venv"
fi

# Portkey's Node SDK, at the versions and integrity hashes of node/package-lock.json.
if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found; installing Debian's nodejs and npm" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq nodejs npm >/dev/null; fi
fi
lock=$(sha256sum node/package-lock.json | cut -d' ' -f1)
if [ "$(cat node/node_modules/.lock.sha256 2>/dev/null)" = "$lock" ]; then
    echo "sdk: node clients present"
else
    (cd node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock" > node/node_modules/.lock.sha256
    echo "sdk: node clients installed in tests/sdk/node/node_modules"
fi

if [ -x /usr/bin/chromium ]; then
    echo "sdk: chromium present"
else
    echo "chromium not found; installing Debian's package" >&2
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
    echo "sdk: chromium installed"
fi
