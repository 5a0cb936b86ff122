#!/usr/bin/env bash
# Installs the client SDKs the SDK tests drive deja with (from PyPI, hash-pinned) into
# tests/sdk/.venv. Idempotent: skipped when the installed set matches requirements.txt.
set -euo pipefail
cd "$(dirname "$0")"
stamp=.venv/requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    echo "sdk: python clients present"
    exit 0
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
    --require-hashes -r requirements.txt
echo "$want" > "$stamp"
echo "sdk: python clients installed in tests/sdk/.venv"
