"""An export folder: each file written under a temporary name and renamed when complete, Parquet in Arrow's
standard list and string types (not the large ones polars writes), and ``dataflow_export.json`` saying which
build output each file holds, so that a folder holding anything else is never written into."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow.parquet as pq

from dataflow.errors import DataflowError
from dataflow.outputs import standard_schema
from dataflow.records import read_record
from dataflow.trainers.inputs import BuildOutput

RECORD = "dataflow_export.json"


@dataclass(frozen=True)
class Written:
    path: Path
    rows: int | None  # None for a config file


class ExportDir:
    """The folder ``--to`` names, checked before anything is written: missing, empty, or an earlier export's."""

    def __init__(self, root: Path, data: BuildOutput, fmt: str):
        self.root, self.data, self.format = root, data, fmt
        self.files: dict[str, dict[str, Any]] = self._earlier_files()
        self.written: list[Written] = []

    def _earlier_files(self) -> dict[str, dict[str, Any]]:
        if self.root.exists() and not self.root.is_dir():
            raise DataflowError(f"--to {self.root}: a file, not a folder; give a folder to export into")
        if (self.root / RECORD).exists():
            try:
                return json.loads((self.root / RECORD).read_text())["files"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raise DataflowError(f"--to {self.root}: its {RECORD}, which says what earlier exports wrote there, is "
                                    f"damaged ({exc}); export into a new folder") from exc
        present = sorted(p.name for p in self.root.iterdir()) if self.root.exists() else []
        if present:
            shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
            raise DataflowError(f"--to {self.root}: the folder holds other files ({shown}) and no {RECORD} of an "
                                f"earlier `dataflow export`; export into a new or empty folder so nothing there is "
                                f"overwritten")
        return {}

    def _claim(self, name: str, shared: bool) -> Path:
        """The path of file ``name``, unless an earlier export of another output or format wrote it."""
        earlier = self.files.get(name)
        owner = {"format": self.format, "output": None if shared else self.data.name}
        if earlier and {k: earlier.get(k) for k in owner} != owner:
            held = f"the {earlier['format']} export" + (f" of output '{earlier['output']}'" if earlier["output"]
                                                        else "")
            raise DataflowError(f"{self.root / name} holds {held}; exporting output '{self.data.name}' as "
                                f"{self.format} would overwrite it: export into another folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.files[name] = {**owner, "pipeline": self.data.pipeline, "build": str(self.data.build.resolve()),
                            "fingerprint": self.data.fingerprint}
        return self.root / name

    def _commit(self, name: str, write, rows: int | None, shared: bool = False) -> Path:
        path = self._claim(name, shared)
        partial = path.with_name(f".{path.name}.partial")
        try:
            write(partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            if not any(self.root.iterdir()):  # made for this export: leave no empty folder behind
                self.root.rmdir()
            raise
        os.replace(partial, path)
        self.files[name]["rows"] = rows
        record = self.root / f".{RECORD}.partial"
        record.write_text(json.dumps({"files": self.files}, indent=1) + "\n")
        os.replace(record, self.root / RECORD)
        self.written.append(Written(path, rows))
        return path

    def parquet(self, name: str, frame: pl.DataFrame) -> Path:
        table = frame.to_arrow()
        table = table.cast(standard_schema(table.schema))
        return self._commit(name, lambda path: pq.write_table(table, path, compression="zstd"), frame.height)

    def jsonl(self, name: str, rows: Iterable[dict[str, Any]], count: int) -> Path:
        def write(path: Path) -> None:
            with path.open("wb") as stream:
                for row in rows:
                    stream.write(orjson.dumps(row) + b"\n")

        return self._commit(name, write, count)

    def earlier_json(self, name: str) -> Any:
        """The JSON of file ``name`` as an earlier export into this folder wrote it (None: there is none)."""
        if name not in self.files or not (self.root / name).exists():
            return None
        return read_record(self.root / name, "written by an earlier export",
                           "export into a new folder, or remove the file and export every output of the folder again")

    def text(self, name: str, text: str, shared: bool = False) -> Path:
        """A config file; ``shared``: written by every export of this format into the folder (e.g. an index)."""
        return self._commit(name, lambda path: path.write_text(text), None, shared)

