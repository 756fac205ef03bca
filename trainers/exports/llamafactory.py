"""LLaMA-Factory: ``<output>.jsonl`` and its entry in the folder's ``dataset_info.json`` (``dataset_dir`` is the
folder, ``dataset`` the output's name; exports of several outputs into one folder share the file).

The ``sharegpt`` style keeps the record's turns with their role/content tags; preference pairs carry
``"ranking": true`` with ``chosen`` and ``rejected`` as single messages (LLaMA-Factory 0.9 drops a pair whose
replies are turn lists). The ``alpaca`` style writes the Alpaca fields. LLaMA-Factory skips a conversation whose
turns do not alternate, so such a row is an error here, naming it.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from dataflow.trainers.exports.chat_formats import alpaca_row
from dataflow.trainers.exports.records import check_alternating, single_reply
from dataflow.trainers.exports.writing import ExportDir
from dataflow.trainers.inputs import BuildOutput

INFO = "dataset_info.json"
CONSUMER = "LLaMA-Factory"
TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
        "observation_tag": "tool", "system_tag": "system"}
ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "system": "system", "history": "history"}


def sharegpt_row(data: BuildOutput, row: dict[str, Any]) -> dict[str, Any]:
    if data.schema != "preference":
        check_alternating(data, row, "messages", CONSUMER, last="assistant")
        return {"messages": row["messages"]}
    check_alternating(data, row, "prompt", CONSUMER, last="user")
    return {"messages": row["prompt"], "chosen": single_reply(data, row, "chosen", CONSUMER),
            "rejected": single_reply(data, row, "rejected", CONSUMER)}


def dataset_entry(file_name: str, style: str, ranking: bool) -> dict[str, Any]:
    """The ``dataset_info.json`` entry LLaMA-Factory's parser reads for the file."""
    replies = {"chosen": "chosen", "rejected": "rejected"} if ranking else {}
    if style == "alpaca":
        columns = {**ALPACA_COLUMNS, **(replies or {"response": "output"})}
        return {"file_name": file_name, "formatting": "alpaca", "ranking": ranking, "columns": columns}
    return {"file_name": file_name, "formatting": "sharegpt", "ranking": ranking,
            "columns": {"messages": "messages", **replies}, "tags": TAGS}


def write_llamafactory(data: BuildOutput, frame: pl.DataFrame, target: ExportDir, style: str) -> list[str]:
    convert = alpaca_row if style == "alpaca" else sharegpt_row
    info = target.earlier_json(INFO) or {}  # read first: a damaged one stops the export before anything is written
    path = target.jsonl(f"{data.name}.jsonl", (convert(data, row) for row in frame.iter_rows(named=True)),
                        frame.height)
    ranking = data.schema == "preference"
    info[data.name] = dataset_entry(path.name, style, ranking)
    target.text(INFO, json.dumps(info, indent=2, ensure_ascii=False) + "\n", shared=True)
    return [(f"LLaMA-Factory: dataset_dir: {target.root.resolve()}, dataset: {data.name}, "
             f"stage: {'dpo' if ranking else 'sft'} (and the template of your model)")]
