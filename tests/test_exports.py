"""`dataflow export`: each format read by its real consumer, on outputs of real builds of the example pipelines.

LLaMA-Factory's data loader and verl's RLHFDataset and reward manager run in their own virtualenvs
(`scripts/reader_venvs.sh`, created once; the tests skip, saying why, where that fails); TRL's CLI parser and
`trl sft` run in the project's venv. Outputs of model pipelines are asserted on as "every row arrived", never on
how many rows the model made.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import REPO

from dataflow import Pipeline
from dataflow.cli import main
from dataflow.operators import BestOfK, MathVerify, PassRate, ToPrompt

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
CPU = ("--use_cpu", "true", "--bf16", "false")  # what a trl command on a CPU adds to an exported config


@pytest.fixture(scope="module")
def quickstart(example_build) -> Path:
    return example_build("quickstart.py")


@pytest.fixture(scope="module")
def dpo_build(example_build) -> Path:
    return example_build("dpo_best_of_k.py")


@pytest.fixture(scope="module")
def grpo_build(example_build) -> Path:
    return example_build("grpo_math.py")


@pytest.fixture(scope="session")
def model_dir() -> str:
    from dataflow.llm.convert import ensure_default_model

    return str(ensure_default_model(log=lambda message: None))


def reader_python(name: str) -> Path:
    """The interpreter of reader venv ``name``, created by scripts/reader_venvs.sh (a no-op once it exists)."""
    started = time.perf_counter()
    result = subprocess.run(["bash", str(REPO / "scripts" / "reader_venvs.sh"), name], capture_output=True,
                            text=True, timeout=900)
    if result.returncode != 0:
        reason = f"the {name} reader venv could not be created: {result.stderr.strip()[-600:]}"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    print(f"{name} reader venv ready in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return REPO / ".venv-readers" / name / "bin" / "python"


@pytest.fixture(scope="session")
def llamafactory_python() -> Path:
    return reader_python("llamafactory")


@pytest.fixture(scope="session")
def verl_python() -> Path:
    return reader_python("verl")


def export(capsys, out: Path, name: str, fmt: str, to: Path, *options: str) -> tuple[int, str, str]:
    code = main(["export", name, "--out", str(out), "--format", fmt, "--to", str(to), *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def exported(capsys, out: Path, name: str, fmt: str, to: Path, *options: str) -> str:
    code, stdout, stderr = export(capsys, out, name, fmt, to, *options)
    assert code == 0, stderr
    return stdout


def rows(out: Path, name: str) -> list[dict]:
    return pl.read_parquet(out / name / "data.parquet").to_dicts()


def read_in(python: Path, script: str, *args: str, tmp_path: Path) -> dict:
    """Run ``script`` in a reader venv; it writes its findings as JSON to the path given last."""
    result_file = tmp_path / "reader.json"
    env = {**os.environ, **OFFLINE, "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    result = subprocess.run([str(python), "-c", script, *args, str(result_file)], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result_file.read_text())


def standard_arrow(path: Path) -> bool:
    """No large or view list, string or binary type anywhere in the Parquet file's schema."""
    schema = str(pq.read_schema(path))
    return "large_" not in schema and "_view" not in schema


# -- LLaMA-Factory ----------------------------------------------------------------------------------------------

LLAMAFACTORY_READER = """
import json, sys
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer

model, work, result = sys.argv[1], sys.argv[2], sys.argv[-1]
found = []
for job in sys.argv[3:-1]:
    dataset_dir, name, stage = job.split(",")
    model_args, data_args, training_args, _, _ = get_train_args(dict(
        stage=stage, do_train=True, model_name_or_path=model, dataset_dir=dataset_dir, dataset=name,
        template="smollm2", cutoff_len=4096, output_dir=work, overwrite_cache=True, report_to="none",
        finetuning_type="lora"))
    tokenizer = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer["tokenizer"], data_args)
    train = get_dataset(template, model_args, data_args, training_args, stage="rm" if stage == "dpo" else stage,
                        **tokenizer)["train_dataset"]
    decode = lambda ids: tokenizer["tokenizer"].decode([i for i in ids if i >= 0])
    keys = ("chosen_labels", "rejected_labels") if stage == "dpo" else ("labels",)
    found.append({"rows": len(train), "columns": train.column_names,
                  "targets": [[decode(row[key]) for key in keys] for row in train]})
json.dump(found, open(result, "w"))
"""


def replies(turns: list[dict]) -> str:
    """The text LLaMA-Factory's labels keep of a conversation: each assistant turn with its end marker."""
    return "".join(f"{t['content']}<|im_end|>\n" for t in turns if t["role"] == "assistant")


def assert_every_row_arrived(sft: dict, dpo: dict, train: list[dict], pairs: list[dict]) -> None:
    """LLaMA-Factory's processed SFT and DPO datasets hold every row, and every reply as the labels."""
    assert sft["rows"] == len(train) and "input_ids" in sft["columns"]
    assert [t[0] for t in sft["targets"]] == [replies(r["messages"]) for r in train]
    assert dpo["rows"] == len(pairs) and {"chosen_input_ids", "rejected_input_ids"} <= set(dpo["columns"])
    assert dpo["targets"] == [[replies(p["chosen"]), replies(p["rejected"])] for p in pairs]


def test_llamafactory_loader_reads_every_row_of_each_layout(quickstart, dpo_build, llamafactory_python, model_dir,
                                                            tmp_path, capsys):
    to = {style: tmp_path / style for style in ("sharegpt", "alpaca")}
    for style, folder in to.items():
        for out, name in ((quickstart, "train"), (quickstart, "eval"), (dpo_build, "dpo_pairs")):
            stdout = exported(capsys, out, name, "llamafactory", folder, "--style", style)
            assert f"{folder / name}.jsonl  ({len(rows(out, name))} rows)" in stdout
            assert f"dataset: {name}" in stdout
    info = json.loads((to["sharegpt"] / "dataset_info.json").read_text())
    assert set(info) == {"train", "eval", "dpo_pairs"} and info["dpo_pairs"]["ranking"] is True

    jobs = [f"{to[style]},{name},{stage}" for style in to for name, stage in (("train", "sft"), ("dpo_pairs", "dpo"))]
    loaded = read_in(llamafactory_python, LLAMAFACTORY_READER, model_dir, str(tmp_path / "work"), *jobs,
                     tmp_path=tmp_path)
    for sft, dpo in (loaded[0:2], loaded[2:4]):
        assert_every_row_arrived(sft, dpo, rows(quickstart, "train"), rows(dpo_build, "dpo_pairs"))


# the dataset_info.json columns LLaMA-Factory's data README gives for plain ShareGPT and Alpaca files
README_COLUMNS = {"sharegpt": {"messages": "conversations"},
                  "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                             "history": "history"}}


def test_sharegpt_and_alpaca_files_load_in_llamafactory(quickstart, dpo_build, llamafactory_python, model_dir,
                                                       tmp_path, capsys):
    folder, jobs, info = tmp_path / "plain", [], {}
    for fmt in ("sharegpt", "alpaca"):
        for out, name, stage in ((quickstart, "train", "sft"), (dpo_build, "dpo_pairs", "dpo")):
            exported(capsys, out, name, fmt, folder / fmt)
            replies_in = {"chosen": "chosen", "rejected": "rejected"} if stage == "dpo" else {}
            info[f"{fmt}_{name}"] = {"file_name": f"{fmt}/{name}.jsonl", "formatting": fmt, "ranking": stage == "dpo",
                                     "columns": {**README_COLUMNS[fmt], **replies_in}}
            jobs.append(f"{folder},{fmt}_{name},{stage}")
    (folder / "dataset_info.json").write_text(json.dumps(info))
    loaded = read_in(llamafactory_python, LLAMAFACTORY_READER, model_dir, str(tmp_path / "work"), *jobs,
                     tmp_path=tmp_path)
    for sft, dpo in (loaded[0:2], loaded[2:4]):
        assert_every_row_arrived(sft, dpo, rows(quickstart, "train"), rows(dpo_build, "dpo_pairs"))


# -- verl -------------------------------------------------------------------------------------------------------

VERL_READER = """
import json, sys
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl import DataProto
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn
from verl.utils.tokenizer import normalize_token_ids
from verl.workers.reward_manager import NaiveRewardManager

parquet, model, cache, result = sys.argv[1:5]
tokenizer = AutoTokenizer.from_pretrained(model)
dataset = RLHFDataset(parquet, tokenizer, OmegaConf.create({"cache_dir": cache, "max_prompt_length": 1024}))
items = [dataset[i] for i in range(len(dataset))]
prompts = [normalize_token_ids(tokenizer.apply_chat_template(item["raw_prompt"], add_generation_prompt=True,
                                                             tokenize=True)) for item in items]
# each prompt answered twice: with its gold answer in the scorer's format, then with a wrong one
gold = [item["reward_model"]["ground_truth"] for item in items]
responses = [f"The answer is #### {g}" for g in gold] + [f"The answer is #### {'1' if g == '0' else '0'}" for g in gold]
response_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in responses]
prompt_ids = prompts + prompts
width_p, width_r = max(map(len, prompt_ids)), max(map(len, response_ids))
pad = tokenizer.pad_token_id or 0
batch = {"prompts": torch.full((len(responses), width_p), pad), "responses": torch.full((len(responses), width_r), pad),
         "attention_mask": torch.zeros((len(responses), width_p + width_r), dtype=torch.long)}
for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
    batch["prompts"][i, width_p - len(p):] = torch.tensor(p)
    batch["responses"][i, :len(r)] = torch.tensor(r)
    batch["attention_mask"][i, width_p - len(p):width_p + len(r)] = 1
columns = {k: v for k, v in collate_fn(items + items).items() if not isinstance(v, torch.Tensor)}
scores = NaiveRewardManager(tokenizer, num_examine=0)(DataProto.from_single_dict({**columns, **batch})).sum(-1)
json.dump({"rows": len(dataset), "raw_prompts": [item["raw_prompt"] for item in items],
           "prompt_texts": [tokenizer.decode(p) for p in prompts], "ground_truths": gold,
           "data_sources": [item["data_source"] for item in items], "abilities": [item["ability"] for item in items],
           "extra_info": [{k: item["extra_info"][k] for k in ("split", "index", "id")} for item in items],
           "scores": scores.tolist()}, open(result, "w"))
"""


def test_verl_dataset_and_reward_manager_read_every_prompt(grpo_build, verl_python, model_dir, tmp_path, capsys):
    stdout = exported(capsys, grpo_build, "grpo_prompts", "verl", tmp_path / "verl", "--data-source", "openai/gsm8k",
                      "--split", "train")
    parquet = tmp_path / "verl" / "grpo_prompts.parquet"
    assert f"data.train_files={parquet}" in stdout and standard_arrow(parquet)
    prompts = rows(grpo_build, "grpo_prompts")
    loaded = read_in(verl_python, VERL_READER, str(parquet), model_dir, str(tmp_path / "cache"), tmp_path=tmp_path)
    assert loaded["rows"] == len(prompts)
    assert loaded["raw_prompts"] == [p["prompt"] for p in prompts]  # as the pass rates were measured
    assert all(p["prompt"][-1]["content"] in text for p, text in zip(prompts, loaded["prompt_texts"]))
    assert loaded["ground_truths"] == [p["answer"] for p in prompts]
    assert loaded["data_sources"] == ["openai/gsm8k"] * len(prompts) and set(loaded["abilities"]) == {"math"}
    assert loaded["extra_info"] == [{"split": "train", "index": i, "id": p["id"]} for i, p in enumerate(prompts)]
    assert loaded["scores"] == [1.0] * len(prompts) + [0.0] * len(prompts)


def test_a_prompt_set_exports_only_with_the_system_prompt_its_pass_rates_were_measured_with(builder, tmp_path,
                                                                                          capsys):
    system = "Answer with the number only."
    p = Pipeline("measured")
    problems = p.from_rows([{"id": "q1", "question": "What is 2+3?", "answer": "5"},
                            {"id": "q2", "question": "What is 4+4?", "answer": "8"}], name="problems")
    samples = problems.apply(ToPrompt(verifier="math"), name="to_prompts").apply(
        BestOfK(conversation="prompt", system=system, k=2, max_tokens=8), name="samples")
    rates = samples.apply(MathVerify(), name="verified").apply(PassRate(carry=("prompt", "answer", "verifier")),
                                                               name="rates")
    p.output("prompts", rates, schema="prompt")
    builder.build(p)
    for options in ((), ("--system", "Think step by step.")):
        code, _, stderr = export(capsys, builder.out, "prompts", "verl", tmp_path / "verl", *options)
        assert code == 1 and "node 'samples' measured its pass rates" in stderr and repr(system) in stderr
        assert not (tmp_path / "verl").exists()
    exported(capsys, builder.out, "prompts", "verl", tmp_path / "verl", "--system", system)
    questions = ("What is 2+3?", "What is 4+4?")
    assert pl.read_parquet(tmp_path / "verl" / "prompts.parquet")["prompt"].to_list() == [
        [{"role": "system", "content": system}, {"role": "user", "content": q}] for q in questions]


# -- TRL --------------------------------------------------------------------------------------------------------

def trl_config(yaml: Path, trainer: str, tmp_path: Path):
    """The YAML as `trl TRAINER --config YAML` parses it on a CPU: (script, training, model, dataset arguments)."""
    parser = importlib.import_module(f"trl.scripts.{trainer}").make_parser()
    return parser.parse_args_and_config(args=["--config", str(yaml), *CPU, "--output_dir", str(tmp_path / "run")])


def test_trl_configs_pick_the_trainer_by_schema_and_load_every_row(quickstart, dpo_build, grpo_build, model_dir,
                                                                   tmp_path, capsys):
    trl = pytest.importorskip("trl")
    cases = ((quickstart, "train", "sft", ["messages"]),
             (dpo_build, "dpo_pairs", "dpo", ["prompt", "chosen", "rejected"]),
             (grpo_build, "grpo_prompts", "grpo", ["prompt", "answer", "verifier"]))
    for out, name, trainer, columns in cases:
        stdout = exported(capsys, out, name, "trl", tmp_path / "trl")
        yaml = tmp_path / "trl" / f"{name}.yaml"
        assert f"trl {trainer} --config {yaml}" in stdout and standard_arrow(tmp_path / "trl" / f"{name}.parquet")
        script_args, _, model_args, dataset_args = trl_config(yaml, trainer, tmp_path)
        assert model_args.model_name_or_path == model_dir
        dataset = trl.get_dataset(dataset_args)["train"]
        assert dataset.num_rows == len(rows(out, name)) and dataset.column_names == columns
    module, function = script_args.reward_funcs[0].rsplit(".", 1)  # the grpo config's, loaded as trl grpo does
    reward = getattr(importlib.import_module(module), function)
    gold, prompts, verifiers = list(dataset["answer"]), list(dataset["prompt"]), list(dataset["verifier"])
    completions = [[{"role": "assistant", "content": f"The answer is {a}."}] for a in gold] + \
                  [[{"role": "assistant", "content": "The answer is 1234567."}] for _ in gold]
    assert reward(prompts=prompts * 2, completions=completions, answer=gold * 2,
                  verifier=verifiers * 2) == [1.0] * len(gold) + [0.0] * len(gold)


def test_trl_sft_trains_a_step_from_the_exported_config(quickstart, model_dir, tmp_path, capsys):
    exported(capsys, quickstart, "eval", "trl", tmp_path / "trl")
    command = [str(Path(sys.executable).with_name("trl")), "sft", "--config", str(tmp_path / "trl" / "eval.yaml"),
               "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--per_device_train_batch_size", "1",
               "--max_length", "64", *CPU, "--report_to", "none", "--save_strategy", "no"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "model.safetensors").exists()


# -- OpenAI and ChatML -------------------------------------------------------------------------------------------

def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_openai_files_follow_the_fine_tuning_formats(quickstart, dpo_build, tmp_path, capsys):
    exported(capsys, quickstart, "train", "openai", tmp_path / "openai")
    exported(capsys, dpo_build, "dpo_pairs", "openai", tmp_path / "openai")
    train = rows(quickstart, "train")
    assert jsonl(tmp_path / "openai" / "train.jsonl") == [{"messages": r["messages"]} for r in train]
    assert jsonl(tmp_path / "openai" / "dpo_pairs.jsonl") == [
        {"input": {"messages": p["prompt"]}, "preferred_output": p["chosen"], "non_preferred_output": p["rejected"]}
        for p in rows(dpo_build, "dpo_pairs")]


def test_chatml_text_tokenizes_into_the_models_own_chat_markers(quickstart, model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    exported(capsys, quickstart, "eval", "chatml", tmp_path / "chatml")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lines, conversations = jsonl(tmp_path / "chatml" / "eval.jsonl"), rows(quickstart, "eval")
    assert len(lines) == len(conversations)
    for line, row in zip(lines, conversations):
        ids = tokenizer(line["text"], add_special_tokens=False)["input_ids"]
        assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == len(row["messages"])
        assert line["text"].endswith(f"{row['messages'][-1]['content']}<|im_end|>\n")


# -- what a user gets wrong ---------------------------------------------------------------------------------------

def test_the_wrong_kind_of_output_is_one_error_naming_output_and_fix(quickstart, builder, tmp_path, capsys):
    code, _, stderr = export(capsys, quickstart, "train", "verl", tmp_path / "a")
    assert code == 1 and "--format verl needs `prompt` and `answer`" in stderr and "output 'train'" in stderr
    p = Pipeline("no_answers")
    p.output("prompts", p.from_rows([{"prompt": [{"role": "user", "content": "2+2?"}]}], name="rows"))
    builder.build(p)
    code, _, stderr = export(capsys, builder.out, "prompts", "verl", tmp_path / "b")
    assert code == 1 and "has columns id, prompt" in stderr
    code, _, stderr = export(capsys, quickstart, "train", "openai", tmp_path / "c", "--style", "alpaca")
    assert code == 1 and "--style: not an option of --format openai" in stderr
    for model in ("hf:", "foo:bar"):
        code, _, stderr = export(capsys, quickstart, "train", "trl", tmp_path / "d", "--model", model)
        assert code == 1 and f"--model '{model}': give local, hf:PATH" in stderr
    assert "Traceback" not in stderr and not any((tmp_path / d).exists() for d in "abcd")


def test_a_row_llamafactory_would_skip_is_an_error_naming_it(builder, tmp_path, capsys):
    two_users = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"},
                 {"role": "assistant", "content": "Hello!"}]
    p = Pipeline("turns")
    p.output("chats", p.from_rows([{"id": "ok", "messages": two_users[1:]}, {"id": "bad", "messages": two_users}],
                                  name="rows"), schema="sft")
    builder.build(p)
    code, _, stderr = export(capsys, builder.out, "chats", "llamafactory", tmp_path / "lf")
    assert code == 1 and "row id=bad: messages[1]: a user turn where assistant must come" in stderr
    assert not (tmp_path / "lf").exists()
    assert exported(capsys, builder.out, "chats", "openai", tmp_path / "openai").count("(2 rows)") == 1


@pytest.mark.parametrize("fmt", ["openai", "sharegpt", "chatml", "trl", "alpaca"])
def test_rows_that_are_not_records_of_the_outputs_schema_stop_an_export_before_any_file(builder, tmp_path, capsys,
                                                                                         fmt):
    user, answer = {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}
    p = Pipeline("unfinished")
    p.output("chats", p.from_rows([{"id": "ok", "messages": [user, answer]}, {"id": "open", "messages": [user]}],
                                  name="rows"), schema="sft")
    builder.build(p)
    code, _, stderr = export(capsys, builder.out, "chats", fmt, tmp_path / fmt)
    assert code == 1 and "1 of 2 rows of output 'chats' are not sft records (row 'open': messages[0].role" in stderr
    assert "Traceback" not in stderr and not (tmp_path / fmt).exists()


def test_an_unrelated_folder_is_never_written_into(quickstart, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    code, _, stderr = export(capsys, quickstart, "train", "openai", folder)
    assert code == 1 and "holds other files (notes.txt)" in stderr and os.listdir(folder) == ["notes.txt"]
    exported(capsys, quickstart, "train", "openai", tmp_path / "export")
    exported(capsys, quickstart, "train", "openai", tmp_path / "export")  # an export again replaces its own files
    code, _, stderr = export(capsys, quickstart, "train", "sharegpt", tmp_path / "export")
    assert code == 1 and "holds the openai export of output 'train'" in stderr
    assert jsonl(tmp_path / "export" / "train.jsonl")[0] == {"messages": rows(quickstart, "train")[0]["messages"]}


def test_openai_refuses_rows_its_fine_tuning_check_refuses(builder, tmp_path, capsys):
    user, answer = {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}
    tool = {"role": "tool", "content": "42"}
    for rows, message in (([{"id": "ok", "messages": [user, answer]}, {"id": "open", "messages": [user]}],
                           "row id=open: messages: no assistant turn"),
                          ([{"id": "ok", "messages": [user, answer]}, {"id": "tool", "messages": [user, tool, answer]}],
                           "row id=tool: messages[1]: a tool turn")):
        p = Pipeline("openai")
        p.output("chats", p.from_rows(rows, name="rows"), schema="conversation")
        builder.build(p)
        code, _, stderr = export(capsys, builder.out, "chats", "openai", tmp_path / "openai")
        assert code == 1 and message in stderr and "Traceback" not in stderr
        assert not (tmp_path / "openai").exists()


def test_a_damaged_record_of_an_earlier_export_is_one_error_and_nothing_is_written(quickstart, tmp_path, capsys):
    exported(capsys, quickstart, "train", "openai", tmp_path / "openai")
    (tmp_path / "openai" / "dataflow_export.json").write_text('{"files": {"tr')
    code, _, stderr = export(capsys, quickstart, "train", "openai", tmp_path / "openai")
    assert code == 1 and "dataflow_export.json, which says what earlier exports wrote there, is damaged" in stderr
    exported(capsys, quickstart, "train", "llamafactory", tmp_path / "lf")
    (tmp_path / "lf" / "dataset_info.json").write_text("{broken")
    code, _, stderr = export(capsys, quickstart, "eval", "llamafactory", tmp_path / "lf")
    assert code == 1 and "dataset_info.json, written by an earlier export, is damaged" in stderr
    assert not (tmp_path / "lf" / "eval.jsonl").exists() and "Traceback" not in stderr


def test_an_output_name_is_found_in_the_build_even_with_a_folder_of_that_name_here(quickstart, tmp_path, capsys,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train").mkdir()
    exported(capsys, quickstart, "train", "openai", tmp_path / "openai")
    assert len(jsonl(tmp_path / "openai" / "train.jsonl")) == len(rows(quickstart, "train"))


def test_verl_and_system_options_refuse_what_they_would_drop_or_add_blank(builder, tmp_path, capsys):
    prompts = [{"prompt": [{"role": "user", "content": f"{i}+1?"}], "answer": str(i + 1), "split": "test"}
               for i in range(3)]
    p = Pipeline("verl")
    p.output("prompts", p.from_rows(prompts, name="rows"), schema="prompt")
    builder.build(p)
    code, _, stderr = export(capsys, builder.out, "prompts", "verl", tmp_path / "verl")
    assert code == 1 and "has column(s) split, which verl's extra_info fills itself" in stderr
    code, _, stderr = export(capsys, builder.out, "prompts", "openai", tmp_path / "openai", "--system", "  ")
    assert code == 1 and "--system is blank" in stderr
