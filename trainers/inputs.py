"""The build outputs that training, export and evaluation read: found by name in a build folder or
by path, checked for rows and record schema before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dataflow.errors import DataflowError
from dataflow.operator import Rejection
from dataflow.records import read_manifest
from dataflow.schemas import SCHEMAS

SHOWN_BAD_ROWS = 3  # invalid rows an error names

DATA = "data.parquet"
FINGERPRINT = ".fingerprint"


@dataclass(frozen=True)
class BuildOutput:
    """One declared output of a build: its Parquet file and what the build recorded about it."""

    name: str
    path: Path  # the data.parquet file
    build: Path  # the build folder (--out) it belongs to
    pipeline: str
    schema: str | None  # the record schema it holds: sft, preference, prompt, conversation, or None
    fingerprint: str
    rows: int

    def frame(self) -> pl.DataFrame:
        try:
            return pl.read_parquet(self.path)
        except pl.exceptions.PolarsError as exc:
            raise unreadable(self.name, self.path, self.build, exc) from exc

    def valid_frame(self, schema: str, purpose: str) -> pl.DataFrame:
        """The rows, each a valid ``schema`` record (``dataflow.schemas``); else an error naming the first bad
        rows, before any model loads or any file is written."""
        frame = self.frame()
        validate, bad, count = SCHEMAS[schema].validate, [], 0
        for row in frame.iter_rows(named=True):
            try:
                validate(row)
            except Rejection as rejection:
                count += 1
                if len(bad) < SHOWN_BAD_ROWS:
                    bad.append(f"row {row.get('id')!r}: {rejection.detail}")
        if count:
            raise DataflowError(f"{purpose}: {count} of {len(frame)} rows of output '{self.name}' are not {schema} "
                                f"records ({'; '.join(bad)}); send them to rejects in the pipeline with "
                                f"`node.validate(\"{schema}\")` and build again")
        return frame

    def record(self) -> dict:
        """How a run or an evaluation names the data it used (a model traces back to its build)."""
        return {"output": self.name, "build": str(self.build.resolve()), "pipeline": self.pipeline,
                "schema": self.schema, "fingerprint": self.fingerprint, "rows": self.rows}


def find_output(ref: str, out: Path | str = "out", allow_empty: bool = False) -> BuildOutput:
    """The output ``ref``: a name in the latest build of ``out``, or an output folder (``OUT/NAME``); one
    without rows is an error unless ``allow_empty``."""
    out, folder = Path(out), Path(ref)
    if (folder / DATA).exists() and (folder.parent / "manifest.json").exists():
        out, name = folder.parent, folder.name
    elif "/" in ref:
        raise DataflowError(f"{ref}: not a build output folder (a folder OUT/NAME with {DATA}, in a build folder "
                            f"with manifest.json); give an output name with --out, or the output's folder")
    else:
        name = ref
    manifest = read_manifest(out)
    outputs = manifest["outputs"]
    if name not in outputs:
        raise DataflowError(f"no output named '{name}' in the last build in {out}/ (pipeline "
                            f"{manifest['pipeline']}); its outputs are: {', '.join(sorted(outputs)) or 'none'}")
    spec = outputs[name]
    if spec.get("skipped"):
        raise DataflowError(f"output '{name}' was held back by a failed gate in the last build of {out}/: "
                            f"see `dataflow report --out {out}`, fix the data and build again")
    path = out / spec["path"] / DATA
    if not path.exists():
        raise DataflowError(f"output '{name}': {path} is missing; build the pipeline again "
                            f"(`dataflow build {manifest.get('file') or 'PIPELINE.py'} --out {out}`)")
    try:
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
    except pl.exceptions.PolarsError as exc:
        raise unreadable(name, path, out, exc) from exc
    if rows == 0 and not allow_empty:
        raise DataflowError(f"output '{name}' in {out}/ has no rows: nothing to train, export or evaluate on; "
                            f"see why with `dataflow query \"select node, reason, count(*) from rejects group by all\""
                            f" --out {out}`")
    fingerprint = (path.parent / FINGERPRINT).read_text().strip() if (path.parent / FINGERPRINT).exists() else ""
    schema = spec.get("schema") or infer_schema(pl.read_parquet_schema(path))
    return BuildOutput(name, path, out, manifest["pipeline"], schema, fingerprint, rows)


def unreadable(name: str, path: Path, out: Path, exc: Exception) -> DataflowError:
    """The error for an output file that is not whole (cut, overwritten): a build writes it again."""
    return DataflowError(f"output '{name}': {path} cannot be read ({str(exc).splitlines()[0]}); build the pipeline "
                         f"again (`dataflow build PIPELINE.py --out {out}`): it writes the output again")


def infer_schema(columns: dict[str, pl.DataType]) -> str | None:
    """The record schema whose required columns an output has (for outputs declared without one)."""
    for name in ("preference", "prompt", "sft"):
        if all(column in columns for column in SCHEMAS[name].columns):
            return name
    return None


def require_schema(data: BuildOutput, accepted: tuple[str, ...], purpose: str) -> None:
    """An error naming what ``purpose`` needs when the output holds other records."""
    if data.schema in accepted:
        return
    needs = {"sft": "`messages` (conversations ending with an assistant turn)",
             "conversation": "`messages` (conversations)",
             "preference": "`prompt`, `chosen`, `rejected` (preference pairs)",
             "prompt": "`prompt` and `answer` (a prompt set with gold answers)"}
    holds = f"holds {data.schema} records" if data.schema else \
        f"has columns {', '.join(pl.read_parquet_schema(data.path))}"
    raise DataflowError(f"{purpose} needs {' or '.join(needs[a] for a in accepted)}, but output '{data.name}' "
                        f"{holds}; give an output of that kind (declare it with `p.output(name, node, "
                        f"schema=\"{accepted[0]}\")`)")
