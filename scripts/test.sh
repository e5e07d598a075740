#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests on a real redis-server (started by the
# tests themselves) and the real prepared models. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
