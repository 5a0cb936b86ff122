#!/usr/bin/env bash
# The one test command: starts what the tests talk to, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_redis
cargo test --locked "$@"
