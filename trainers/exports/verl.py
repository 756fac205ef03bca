"""verl: ``<output>.parquet`` in the layout of verl's RL datasets, one row per prompt.

``data_source`` (verl's reward manager picks the scoring function by it), ``prompt`` (the chat turns, as the
pass rate was measured), ``ability`` (the row's verifier), ``reward_model`` ``{style: "rule", ground_truth}``
(the gold answer) and ``extra_info`` ``{split, index, ...}`` with the record's other columns (``id``,
``pass_rate``, ...).
"""

from __future__ import annotations

import polars as pl

from dataflow.errors import DataflowError
from dataflow.trainers.exports.records import row_error
from dataflow.trainers.exports.writing import ExportDir
from dataflow.trainers.inputs import BuildOutput

PLACED = ("prompt", "answer", "split", "index")  # record columns that are not copied into extra_info


def write_verl(data: BuildOutput, frame: pl.DataFrame, target: ExportDir, split: str, data_source: str) -> list[str]:
    taken = [c for c in ("split", "index") if c in frame.columns]
    if taken:
        raise DataflowError(f"output '{data.name}' has column(s) {', '.join(taken)}, which verl's extra_info fills "
                            f"itself (split from --split, index from the row's position): rename them in the "
                            f"pipeline (e.g. node.rename({{'{taken[0]}': 'source_{taken[0]}'}})) and build again")
    blank = frame.filter(pl.col("answer").is_null() | (pl.col("answer").str.strip_chars() == ""))
    if blank.height:
        raise row_error(data, blank.row(0, named=True), "answer", "empty, and verl's reward compares each response "
                        "with reward_model.ground_truth", "drop prompts without a gold answer and build again")
    ability = pl.col("verifier").fill_null("general") if "verifier" in frame.columns else pl.lit("general")
    rows = frame.select(
        data_source=pl.lit(data_source), prompt=pl.col("prompt"), ability=ability,
        reward_model=pl.struct(style=pl.lit("rule"), ground_truth=pl.col("answer")),
        extra_info=pl.struct(pl.lit(split).alias("split"), pl.int_range(pl.len(), dtype=pl.Int64).alias("index"),
                             *[c for c in frame.columns if c not in PLACED]))
    path = target.parquet(f"{data.name}.parquet", rows)
    return [f"verl: data.train_files={path.resolve()} (or data.val_files) data.prompt_key=prompt",
            (f"verl picks the reward function by data_source '{data_source}': name one of its own scorers with "
             f"--data-source (e.g. openai/gsm8k for answers after '####'), or give custom_reward_function.path")]
