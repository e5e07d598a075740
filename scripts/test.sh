#!/usr/bin/env bash
# The whole test suite: unit tests, then integration tests on a real redis-server (started by the
# tests themselves) and the real prepared models. Extra arguments go to pytest.
#
# The test files run on every core at once (pytest-xdist, one worker per core; a file's tests stay
# on one worker, so a module's server starts once): ASSISTANT_TEST_WORKERS=1 runs them one after
# the other, in one process (e.g. to read a failing test's output in order).
set -euo pipefail
cd "$(dirname "$0")/.."
workers="${ASSISTANT_TEST_WORKERS:-auto}"
if [ "$workers" = 1 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
