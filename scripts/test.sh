#!/usr/bin/env bash
# The one test command: starts Redis and Postgres where none answers, fetches the models the tests embed
# with and the client SDKs the tests drive deja with, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
ensure_redis
ensure_postgres
bash models/fetch.sh
bash tests/sdk/setup.sh
# Most tests wait on sockets and child processes, not the CPU: twice the cores keeps both busy.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$(( $(nproc) * 2 ))}"
cargo test --locked "$@"
