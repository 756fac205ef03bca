#!/usr/bin/env bash
# The virtualenvs in which tests/test_exports.py reads exports with their real consumers:
# .venv-readers/llamafactory (LLaMA-Factory's data loader) and .venv-readers/verl (RLHFDataset, the reward manager).
# Neither can share .venv: LLaMA-Factory pins transformers<=5.6, datasets<=4.0 and trl<=0.24, verl transformers<5.11.
# Each venv holds the consumer (without its dependencies) and what it pins; .venv's packages (torch, numpy, ...)
# come after its own through a .pth line, so its pins win. Idempotent: a venv whose stamp matches is kept.
# Usage: bash scripts/reader_venvs.sh [llamafactory] [verl]   (both by default)
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN=.venv/bin/python
[ -x "$MAIN" ] || { echo "reader_venvs.sh: .venv is missing; run scripts/setup.sh first" >&2; exit 1; }
MAIN_PACKAGES=$("$MAIN" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
pip_in() { "$1/bin/python" -m pip install -q --disable-pip-version-check "${@:2}"; }

reader_venv() {  # name, the consumer's package, its pins
    local dir=.venv-readers/$1 package=$2 pins=$3
    local stamp="$package $pins $MAIN_PACKAGES"
    if [ "$(cat "$dir/.ready" 2>/dev/null)" = "$stamp" ]; then return 0; fi
    rm -rf "$dir"
    "$MAIN" -m venv "$dir"
    local own
    own=$("$dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$MAIN_PACKAGES" > "$own/zz-main-venv.pth"  # after the venv's own site-packages: its pins come first
    pip_in "$dir" --no-deps "$package"
    # shellcheck disable=SC2086  # the pins are words
    pip_in "$dir" $pins
    if [ "$1" = llamafactory ]; then
        # LLaMA-Factory's data module imports torchaudio at module level, for audio datasets only; its builds do
        # not load beside the CPU torch of .venv, and text data never calls it.
        mkdir -p "$own/torchaudio"
        echo '"""Stands in for torchaudio, which LLaMA-Factory imports but text datasets never call."""' \
            > "$own/torchaudio/__init__.py"
    fi
    echo "$stamp" > "$dir/.ready"
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(llamafactory verl)
for name in "${names[@]}"; do
    case $name in
        # kernels: the version these transformers declare (the one .venv's newer transformers pulls in breaks them)
        llamafactory) reader_venv llamafactory "llamafactory==0.9.5" \
            "transformers==5.6.0 kernels==0.12.3 datasets==4.0.0 trl==0.24.0 peft==0.18.1 accelerate==1.11.0 omegaconf" ;;
        verl) reader_venv verl "verl==0.9.1" \
            "transformers==5.10.4 kernels==0.12.3 ray==2.58.0 tensordict==0.10.0 omegaconf pillow" ;;
        *) echo "unknown reader venv '$name': llamafactory or verl" >&2; exit 2 ;;
    esac
done
