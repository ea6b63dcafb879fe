#!/usr/bin/env bash
# Runs every test of the workspace: installs what the integration tests need (MariaDB
# for the mysql checks) when it is missing, then the test runner.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "cargo-nextest not found; using cargo test" >&2
    exec cargo test --workspace --no-fail-fast "$@"
fi
