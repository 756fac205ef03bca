"""Declared outputs under ``<out>/<name>/``: the data, a dataset card and the fingerprint.

The data has standard Arrow types (``string``, ``list``), not the ``large_*`` ones polars writes, so
``datasets.concatenate_datasets`` and ``interleave_datasets`` take an output together with an
ordinary hub dataset. The local executor writes a node of plain types (strings, numbers, booleans,
lists and structs of them) with standard types declared in its Parquet footer (``standard_metadata``),
so its output is a copy of the stored file; any other is cast from the store one row group at a time,
so memory stays flat however large it is. Either happens only when its node changed.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from dataflow.compiler import CompiledPipeline
from dataflow.records import NodeStats, lineage, nearly_empty_note, stored_rows
from dataflow.store import DATA, Store, now

if TYPE_CHECKING:  # pyarrow is imported where it is used: `dataflow build` starts before it is needed
    import pyarrow as pa

FINGERPRINT_FILE = ".fingerprint"
ARROW_SCHEMA = "ARROW:schema"  # the footer key where Parquet readers find a file's Arrow types
REJECTS_CODEC = "lz4"  # rejects are written every build and read rarely: lz4 writes faster than zstd
DATA_ZSTD_LEVEL = 1  # node data: ~15% faster to write than polars' default level (3), ~3% larger
PLAIN_TYPES = (pl.String, pl.Binary, pl.Boolean, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16,
               pl.UInt32, pl.UInt64, pl.Float32, pl.Float64)


def write_output(store: Store, compiled: CompiledPipeline, name: str, stats: dict[str, NodeStats]) -> bool:
    """Materialize output ``name``; returns False when it was already up to date (its node was
    found in the store, as this output shows it: a node built again, by ``--rebuild`` or to retry
    failed requests, may hold other rows under the same fingerprint; and its data file is whole)."""
    node = stats[compiled.outputs[name].node]
    target = store.out / name
    marker = target / FINGERPRINT_FILE
    if node.status == "cached" and marker.exists() and marker.read_text() == node.fingerprint \
            and _whole_parquet(target / DATA):
        return False
    tmp = store.tmp / f"out-{name}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    _write_data(store, node.fingerprint, tmp / DATA)
    (tmp / "README.md").write_text(dataset_card(compiled, name, stats))
    (tmp / FINGERPRINT_FILE).write_text(node.fingerprint)
    store.move_into_place(tmp, target)
    return True


def _whole_parquet(path: Path) -> bool:
    """Whether ``path`` ends as a Parquet file does (a deleted, cut or overwritten file does not)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def withdraw_output(store: Store, name: str) -> None:
    """Remove output ``name`` from the output folder: a gate held it back, and what an earlier
    build wrote there must not pass for this build's data."""
    target = store.out / name
    if target.exists():
        gone = store.tmp / f"withdrawn-{name}.{os.getpid()}.{secrets.token_hex(4)}"
        gone.parent.mkdir(parents=True, exist_ok=True)
        target.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)


def _write_data(store: Store, fingerprint: str, target: Path) -> None:
    """The node's rows as Parquet with standard Arrow types: a copy of the stored file when it has them
    and the node removed no rows from it, else one stored row group at a time (a view's: the row groups
    of the data it filters, less the rows it rejected)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data, removed = stored_rows(store, fingerprint)
    source = pq.ParquetFile(data)
    standard = standard_schema(source.schema_arrow)
    if not len(removed) and source.schema_arrow.equals(standard):
        shutil.copyfile(data, target)
        return
    rejected = removed.to_arrow().cast(source.schema_arrow.field("id").type)
    with pq.ParquetWriter(target, standard, compression="zstd") as writer:
        for i in range(source.num_row_groups):
            table = source.read_row_group(i)
            if len(rejected):
                table = table.filter(pc.invert(pc.is_in(table["id"], value_set=rejected)))
            writer.write_table(table.cast(standard))


def data_sink(frame: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    """The lazy sink of a node's data file, as every executor writes it: zstd level 1, and standard Arrow types
    declared in the footer where the schema allows (so an output of the node is a copy of the file)."""
    metadata = standard_metadata(frame.collect_schema())
    return frame.sink_parquet(path, compression="zstd", compression_level=DATA_ZSTD_LEVEL, metadata=metadata,
                              lazy=True)


def rejects_sink(frame: pl.LazyFrame, path: Path) -> pl.LazyFrame:
    """The lazy sink of a node's rejects file, as every executor writes it."""
    return frame.sink_parquet(path, compression=REJECTS_CODEC, lazy=True)


def standard_metadata(schema: pl.Schema) -> dict[str, str] | None:
    """Parquet footer metadata that declares standard Arrow types for what polars writes with ``schema``
    (polars writes large ones); None unless every column is of plain types (``PLAIN_TYPES``, and lists
    and structs of them), whose Parquet data is the same in both."""
    if not all(_plain(dtype) for dtype in schema.values()):
        return None
    arrow = standard_schema(pl.DataFrame(schema=schema).to_arrow().schema)
    return {ARROW_SCHEMA: base64.b64encode(arrow.serialize().to_pybytes()).decode()}


def _plain(dtype: pl.DataType) -> bool:
    dtype = dtype() if isinstance(dtype, type) else dtype  # a struct field may hold the class
    if isinstance(dtype, pl.List):
        return _plain(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return all(_plain(f.dtype) for f in dtype.fields)
    return isinstance(dtype, PLAIN_TYPES)


def standard_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with standard types in place of large and view ones, through nested types."""
    import pyarrow as pa

    return pa.schema([_standard_field(f) for f in schema], metadata=schema.metadata)


def _standard_field(field: pa.Field) -> pa.Field:
    return field.with_type(standard_type(field.type))


def standard_type(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with ``string`` for ``large_string``/``string_view``, ``binary`` for
    ``large_binary``/``binary_view`` and ``list`` for ``large_list``/``list_view``, at every depth."""
    import pyarrow as pa

    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return pa.binary()
    if pa.types.is_fixed_size_list(dtype):
        return pa.list_(_standard_field(dtype.value_field), dtype.list_size)
    if pa.types.is_map(dtype):
        return pa.map_(_standard_field(dtype.key_field), _standard_field(dtype.item_field), dtype.keys_sorted)
    if any(check(dtype) for check in (pa.types.is_list, pa.types.is_large_list, pa.types.is_list_view,
                                      pa.types.is_large_list_view)):
        return pa.list_(_standard_field(dtype.value_field))
    if pa.types.is_struct(dtype):
        return pa.struct([_standard_field(dtype.field(i)) for i in range(dtype.num_fields)])
    return dtype


def dataset_card(compiled: CompiledPipeline, name: str, stats: dict[str, NodeStats]) -> str:
    spec = compiled.outputs[name]
    node_name, node = spec.node, stats[spec.node]
    pipeline = compiled.pipeline
    steps = lineage({n: compiled.nodes[n].inputs for n in compiled.order}, node_name)
    note = nearly_empty_note(name, node.rows_out, [stats[s] for s in steps])
    lines = [
        f"# {name}", "",
        f"Output `{name}` of the dataflow pipeline `{pipeline.name}` (node `{node_name}`), "
        f"built {now()}.", "",
        pipeline.description, "",
        *([f"**Warning**: {note}.", ""] if note else []),
        f"- rows: {node.rows_out:,}",
        *([f"- records: `{spec.schema}` (see `dataflow.schemas`)"] if spec.schema else []),
        f"- fingerprint: `{node.fingerprint}`",
        f"- parameters: {', '.join(f'{k}={v!r}' for k, v in pipeline.params.items()) or 'none'}", "",
        "## Columns", "", "| column | type |", "| --- | --- |",
        *[f"| {col} | {dtype} |" for col, dtype in node.schema.items()], "",
        "## How it was made", "", "| step | operator | rows in | rows out | rejected |",
        "| --- | --- | --- | --- | --- |",
    ]
    for step in steps:
        s = stats[step]
        rows_in = "" if s.rows_in is None else f"{s.rows_in:,}"
        lines.append(f"| {step} | {s.op} | {rows_in} | {s.rows_out:,} | {s.rejected:,} |")
    lines += ["", "## Load it", "", "```python",
              "import polars as pl",
              f'df = pl.read_parquet("{name}/{DATA}")',
              "from datasets import load_dataset",
              f'ds = load_dataset("parquet", data_files="{name}/{DATA}", split="train")',
              "```", "",
              "Rejected rows of every step: `dataflow query \"select * from rejects\"`.", ""]
    return "\n".join(lines)
