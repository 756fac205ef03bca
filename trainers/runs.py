"""Training runs: one content-addressed folder per (trainer, base model, config, training data).

    runs/<run_id>/run.json       what trained it: trainer, base model, resolved config, the build outputs
                                 (with fingerprints), status, loss, timings, versions
    runs/<run_id>/config.yaml    the resolved config (``dataflow train ... --config`` reads this format)
    runs/<run_id>/loss.jsonl     the trainer's log, one line per logging step
    runs/<run_id>/checkpoints/   TRL checkpoints while it runs (a killed run resumes from the last)
    runs/<run_id>/model/         the trained model (a Hugging Face directory: ``hf:runs/<run_id>/model``)
    runs/<run_id>/eval/          evaluations of the model (``dataflow eval``)

The same trainer, base model, config and data give the same run id, so a finished run is never
trained again and a killed one continues where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataflow.errors import DataflowError
from dataflow.filehash import file_digest
from dataflow.fingerprint import digest
from dataflow.llm.backends import resolve_spec
from dataflow.llm.spec import SpecError
from dataflow.records import write_record

RUNS = Path("runs")
RECORD = "run.json"
MODEL = "model"
LAST = "last"  # the run started last, wherever a run id is asked for
SERVED = ("openai",)  # model specs that name a server: nothing local to train or to score


def run_id(trainer: str, base_identity: str, config: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    """The run's address: what it computes from, never where or how fast."""
    data = [{k: record[k] for k in ("fingerprint", "schema", "rows")} for record in inputs]
    return f"{trainer}-{digest([trainer, base_identity, config, data], size=12)}"


def read_run(directory: Path) -> dict[str, Any]:
    return json.loads((directory / RECORD).read_text())


def write_run(directory: Path, record: dict[str, Any]) -> None:
    write_record(directory / RECORD, record)


def find_run(ref: str, runs: Path = RUNS) -> Path:
    """A run folder: its path, its id, a unique prefix of an id in ``runs``, or ``last`` (the run started last)."""
    if (Path(ref) / RECORD).exists():
        return Path(ref)
    records = sorted(Path(runs).glob(f"*/{RECORD}"), key=lambda p: read_run(p.parent).get("started", ""))
    if ref == LAST and records:
        return records[-1].parent
    found = [p.parent for p in records if p.parent.name.startswith(ref)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DataflowError(f"run '{ref}' is ambiguous in {runs}/: {', '.join(p.name for p in found)}; "
                            f"give more of the id")
    raise DataflowError(f"'{ref}' is neither a model spec (local, hf:PATH, vllm:PATH) nor a run in {runs}/ "
                        f"(`ls {runs}` lists the runs; pass --runs DIR if they are elsewhere)")


def resolve_model(text: str, runs: Path = RUNS) -> tuple[str, Path | None]:
    """The model spec for ``text`` (a spec, or a run whose model is used) and the run folder if any.
    An unfinished run is an error: its model folder does not exist yet."""
    try:
        resolve_spec(text)
        return text, None
    except SpecError as exc:
        if ":" in text and not Path(text).exists():
            raise DataflowError(f"model {text!r}: {exc}") from exc
    directory = find_run(text, runs)
    record = read_run(directory)
    if record.get("status") != "finished" or not (directory / MODEL / "config.json").exists():
        raise DataflowError(f"run {directory.name} has not finished (status {record.get('status')}); run its "
                            f"`dataflow train` command again to resume it")
    return f"hf:{directory / MODEL}", directory


def trainable_dir(spec_text: str) -> Path:
    """The Hugging Face directory a spec's model is trained from (an error for a served model)."""
    spec = resolve_spec(spec_text)
    if spec.scheme in SERVED:
        raise DataflowError(f"model {spec_text!r} is served by a remote server: it cannot be trained here; "
                            f"give local, hf:PATH (a saved Hugging Face model) or a run id")
    if spec.scheme == "local":
        from dataflow.llm.convert import ensure_default_model

        return ensure_default_model()
    if spec.scheme in ("hf", "vllm") and not (Path(spec.target) / "config.json").is_file():
        raise DataflowError(f"model {spec_text!r}: {spec.target} is not a saved Hugging Face model (no config.json "
                            f"there); give hf:PATH of a model folder, local, or a finished run's id")
    return Path(spec.target)


def base_identity(directory: Path) -> str:
    """What the base model is, by content (a moved copy is the same base)."""
    return file_digest(directory)
