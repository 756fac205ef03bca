"""``dataflow export NAME --format FORMAT --to DIR``: a build output as the files a trainer reads as they are.

Formats: ``llamafactory`` (data files and ``dataset_info.json``), ``verl`` (RL Parquet), ``trl`` (Parquet and a
``trl sft|dpo|grpo --config`` YAML), ``openai``, ``sharegpt``, ``alpaca`` and ``chatml`` (JSONL). Every row of the
output is written, or the export stops at the first row the consumer would drop, naming it. DIR must be new,
empty or an earlier export's folder (``dataflow_export.json`` says which output each file holds).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from dataflow.errors import DataflowError
from dataflow.trainers.exports.chat_formats import write_chat_format
from dataflow.trainers.exports.llamafactory import write_llamafactory
from dataflow.trainers.exports.records import TURNS_COLUMN, check_measured_prompt, plain_turns, with_system
from dataflow.trainers.exports.trl_config import write_trl
from dataflow.trainers.exports.verl import write_verl
from dataflow.trainers.exports.writing import ExportDir
from dataflow.trainers.inputs import BuildOutput, find_output, require_schema

CHATS = ("sft", "conversation", "preference")


@dataclass(frozen=True)
class Format:
    accepts: tuple[str, ...]  # the record schemas it takes
    write: Callable[[BuildOutput, pl.DataFrame, ExportDir, argparse.Namespace], list[str]]  # -> next steps


FORMATS = {
    "llamafactory": Format(CHATS, lambda data, frame, target, args:
                           write_llamafactory(data, frame, target, args.style or "sharegpt")),
    "verl": Format(("prompt",), lambda data, frame, target, args:
                   write_verl(data, frame, target, args.split or "train", args.data_source or data.pipeline)),
    "trl": Format((*CHATS, "prompt"), lambda data, frame, target, args:
                  write_trl(data, frame, target, args.model or "local")),
    **{name: Format(CHATS, lambda data, frame, target, args, name=name: write_chat_format(name, data, frame, target))
       for name in ("openai", "sharegpt", "alpaca", "chatml")},
}
# options that only some formats read; given to another, they are an error rather than ignored
FORMAT_OPTIONS = {"style": ("llamafactory",), "split": ("verl",), "data_source": ("verl",), "model": ("trl",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="an output name of the last build in --out, or an OUT/NAME folder")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="what to write")
    parser.add_argument("--to", required=True, type=Path, metavar="DIR",
                        help="the folder to write into: new, empty, or one an earlier export wrote")
    parser.add_argument("--system", metavar="TEXT", help="a system turn put first in every conversation or prompt "
                                                         "that has none")
    parser.add_argument("--style", choices=("sharegpt", "alpaca"),
                        help="llamafactory: the dataset layout (default: sharegpt, turns with role/content tags)")
    parser.add_argument("--split", help="verl: extra_info.split of every row (default: train)")
    parser.add_argument("--data-source", help="verl: the data_source that picks verl's reward function "
                                              "(default: the pipeline's name)")
    parser.add_argument("--model", help="trl: model_name_or_path in the YAML: local (the packaged default model, "
                                        "the default), hf:PATH, or a path or hub id")


def run(args: argparse.Namespace) -> int:
    misplaced = [f"--{option.replace('_', '-')}" for option, formats in FORMAT_OPTIONS.items()
                 if getattr(args, option) is not None and args.format not in formats]
    if misplaced:
        raise DataflowError(f"{', '.join(misplaced)}: not an option of --format {args.format}; see "
                            f"`dataflow export --help` for which format reads which option")
    if args.system is not None and not args.system.strip():
        raise DataflowError("--system is blank: give the system prompt's text, or leave --system out")
    fmt = FORMATS[args.format]
    data = find_output(args.name, args.out)
    require_schema(data, fmt.accepts, f"--format {args.format}")
    target = ExportDir(args.to, data, args.format)
    steps = fmt.write(data, prepared_frame(data, args.system), target, args)
    for written in target.written:
        print(f"wrote {written.path}" + ("" if written.rows is None else f"  ({written.rows} rows)"))
    for step in steps:
        print(f"next: {step}")
    return 0


def prepared_frame(data: BuildOutput, system: str | None) -> pl.DataFrame:
    """The output's rows with plain turns and ``system`` first; a prompt set's prompts as their pass rates were
    measured."""
    frame = plain_turns(data.valid_frame(data.schema, "`dataflow export`"), data.schema)
    if data.schema == "prompt":
        check_measured_prompt(data, frame, system)
    return with_system(frame, TURNS_COLUMN[data.schema], system)
