"""`dataflow train sft|dpo|grpo` on TRL with the packaged model, from outputs the example pipelines
built: run folders that name their build, no second training of a finished run, resume after a kill,
assistant-only loss on a template without markers, rewards from dataflow's verifiers, and bad input
refused before any model loads."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from dataflow.cli import main
from dataflow.pipeline import Pipeline
from dataflow.trainers.config import load_config
from dataflow.trainers.runs import find_run, read_run

pytest.importorskip("trl")
TINY = ["--set", "batch_size=2", "--set", "max_length=128"]


@pytest.fixture(scope="module")
def sft_out(example_build):
    return example_build("quickstart.py")


def train(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["train", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_folder(stdout: str) -> Path:
    return Path(re.search(r"(?:-> |already trained: )([^;\s]+)", stdout).group(1))


def test_sft_run_names_its_build_and_is_not_trained_twice(sft_out, tmp_path, capsys):
    args = ["sft", "train", "--out", str(sft_out), "--runs", str(tmp_path / "runs"), *TINY, "--set", "max_steps=3"]
    code, out, _ = train(capsys, *args)
    assert code == 0, out
    folder = run_folder(out)
    record = read_run(folder)
    assert record["status"] == "finished" and record["steps"] == 3 and record["trainer"] == "sft"
    [data] = record["inputs"]
    assert data["output"] == "train" and data["pipeline"] == "quickstart"
    assert data["fingerprint"] == (sft_out / "train" / ".fingerprint").read_text()
    assert [e["step"] for e in map(json.loads, (folder / "loss.jsonl").read_text().splitlines())] == [1, 2, 3]
    assert (folder / "model" / "config.json").exists() and not (folder / "checkpoints").exists()
    assert load_config("sft", folder / "config.yaml", {}).max_steps == 3  # the resolved config reads back
    assert find_run("last", tmp_path / "runs") == folder
    weights = folder / "model" / "model.safetensors"
    written = weights.stat().st_mtime_ns

    code, out, _ = train(capsys, *args)
    assert code == 0 and "already trained" in out and weights.stat().st_mtime_ns == written


def test_a_killed_run_resumes_from_its_last_checkpoint(sft_out, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["sft", "train", "--out", str(sft_out), "--runs", str(runs), *TINY, "--set", "max_steps=3",
            "--set", "save_steps=1"]
    command = [sys.executable, "-m", "dataflow.cli", "train", *args]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(runs.glob("*/checkpoints/checkpoint-*/trainer_state.json")) and time.monotonic() < deadline:
        assert job.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    [folder] = runs.iterdir()
    assert read_run(folder)["status"] == "running"

    code, out, _ = train(capsys, *args)
    assert code == 0 and "resuming from step" in out
    record = read_run(folder)
    assert record["status"] == "finished" and record["steps"] == 3 and record["resumed_at_step"] >= 1
    losses = [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]
    assert [e["step"] for e in losses] == [1, 2, 3]
    # the same run uninterrupted (save_steps is a runtime field: the same run id) logged the same losses
    uninterrupted = tmp_path / "again"
    assert main(["train", *args[:4], "--runs", str(uninterrupted), *args[6:]]) == 0
    capsys.readouterr()
    [other] = uninterrupted.iterdir()
    assert other.name == folder.name
    again = [json.loads(line)["loss"] for line in (other / "loss.jsonl").read_text().splitlines()]
    assert again == pytest.approx([e["loss"] for e in losses], rel=1e-4)


def test_dpo_with_lora_on_the_pairs_of_the_best_of_k_pipeline(example_build, tmp_path, capsys):
    out = example_build("dpo_best_of_k.py")
    code, stdout, _ = train(capsys, "dpo", "dpo_pairs", "--out", str(out), "--runs", str(tmp_path), *TINY,
                            "--set", "max_steps=1", "--set", "lora=true")
    assert code == 0, stdout
    folder = run_folder(stdout)
    assert read_run(folder)["config"]["lora"] is True
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder / "model")  # merged: a plain model, no adapters
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_grpo_on_the_math_prompt_set_rewards_with_math_verify(example_build, tmp_path, capsys):
    out = example_build("grpo_math.py")
    code, stdout, _ = train(capsys, "grpo", "grpo_prompts", "--out", str(out), "--runs", str(tmp_path),
                            "--set", "max_steps=1", "--set", "batch_size=2", "--set", "num_generations=2",
                            "--set", "max_completion_length=16")
    assert code == 0, stdout
    [entry] = [json.loads(line) for line in (run_folder(stdout) / "loss.jsonl").read_text().splitlines()]
    assert "rewards/verified_answer/mean" in entry
    cut = entry["completions/clipped_ratio"] >= 0.5  # 16 tokens: most completions are cut
    assert ("of the completions were cut at max_completion_length (16 tokens)" in stdout) == cut
    assert ("no step had a learning signal" in stdout) == (entry["frac_reward_zero_std"] == 1.0)


def test_the_training_summary_compares_mean_losses_and_names_a_grpo_run_without_signal():
    from dataflow.trainers.config import GRPOTrainConfig
    from dataflow.trainers.train import _loss_change, _signal_warnings

    entries = [{"step": i, "loss": loss} for i, loss in enumerate([2.0, 1.0, 3.0, 1.5, 0.5, 1.0], 1)]
    assert _loss_change(entries) == ("mean loss of the first 3 logged step(s) 2.0000, of the last 3 1.0000")
    assert _loss_change([]) == "no loss logged"
    flat = [{"loss": 0.0, "frac_reward_zero_std": 1.0, "completions/clipped_ratio": 0.75}] * 2
    warnings = _signal_warnings(flat, GRPOTrainConfig())
    assert len(warnings) == 2 and warnings[0].startswith("no step had a learning signal")
    assert warnings[1].startswith("75% of the completions were cut at max_completion_length (128 tokens)")
    learning = [{"loss": 0.1, "frac_reward_zero_std": 1.0}, {"loss": 0.2, "frac_reward_zero_std": 0.5}]
    assert _signal_warnings(learning, GRPOTrainConfig()) == []
    assert _signal_warnings(entries, GRPOTrainConfig()) == []  # SFT and DPO log neither measure


def test_grpo_rewards_come_from_the_verifier_each_row_names():
    from dataflow.trainers.rewards import grpo_reward

    reward = grpo_reward(default="exact")
    completions = [[{"role": "assistant", "content": "so the answer is $\\frac{1}{2}$"}],
                   [{"role": "assistant", "content": "The answer is 3."}],
                   [{"role": "assistant", "content": "Paris"}], [{"role": "assistant", "content": "Rome"}],
                   [{"role": "assistant", "content": '{"name": "x"}'}], [{"role": "assistant", "content": "{}"}]]
    schema = json.dumps({"type": "object", "required": ["name"]})
    rewards = reward(prompts=[None] * 6, completions=completions, answer=["0.5", "4", "paris", "paris", schema, schema],
                     verifier=["math", "math", None, None, "json_schema", "json_schema"])
    assert rewards == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]


def test_a_completion_whose_check_ran_out_of_time_is_rewarded_0_not_left_unscored(monkeypatch):
    from dataflow.trainers import rewards as grpo

    monkeypatch.setattr(grpo, "check", lambda verifier, responses, answers: [None] * len(responses))
    assert grpo.grpo_reward("math")(prompts=[None], completions=["\\boxed{9^{9^9}}"], answer=["3"]) == [0.0]


def test_assistant_only_loss_marks_exactly_the_assistant_turns():
    from transformers import AutoTokenizer

    from dataflow.llm.convert import ensure_default_model
    from dataflow.trainers.templates import training_template

    tokenizer = AutoTokenizer.from_pretrained(ensure_default_model())
    marked = training_template(tokenizer, "local")
    conversation = [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven."},
                    {"role": "user", "content": "And an even one?"}, {"role": "assistant", "content": "Two."}]
    encoded = tokenizer.apply_chat_template(conversation, chat_template=marked, return_dict=True,
                                            return_assistant_tokens_mask=True)
    assert encoded["input_ids"] == tokenizer.apply_chat_template(conversation, return_dict=True)["input_ids"]
    trained = [t for t, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(trained) == "Seven.<|im_end|>\nTwo.<|im_end|>\n"


def test_config_file_then_settings_and_unknown_keys(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("beta: 0.3\nbatch_size: 8\n")
    config = load_config("dpo", path, {"batch_size": "2"})
    assert (config.beta, config.batch_size, config.learning_rate) == (0.3, 2, 5e-6)
    from dataflow.errors import DataflowError

    with pytest.raises(DataflowError, match="unknown config key 'bta'.*did you mean beta"):
        load_config("dpo", None, {"bta": "0.1"})
    with pytest.raises(DataflowError, match="'batch_size' .* takes a int"):
        load_config("sft", None, {"batch_size": "four"})
    with pytest.raises(DataflowError, match="multiple of num_generations"):
        load_config("grpo", None, {"batch_size": "3"})


@pytest.mark.parametrize("order, sampler", [("sequential", "SequentialSampler"), ("random", "RandomSampler")])
def test_a_sequential_order_keeps_the_rows_in_the_data_order(tmp_path, order, sampler):
    import datasets

    from dataflow.llm.convert import ensure_default_model
    from dataflow.trainers.trl_setup import make_trainer

    rows = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": f"q{i}"},
                                                     {"role": "assistant", "content": f"a{i}"}]} for i in range(4)])
    config = load_config("sft", None, {"order": order, "batch_size": "2"})
    run = make_trainer("sft", config, ensure_default_model(), "local", rows, tmp_path, [])
    assert type(run._get_train_sampler()).__name__ == sampler  # a curriculum's order reaches the batches
    with pytest.raises(Exception, match="order must be random or sequential, not 'shuffled'"):
        load_config("sft", None, {"order": "shuffled"})


def test_memory_estimate_counts_the_model_parameters():
    from transformers import AutoModelForCausalLM

    from dataflow.llm.convert import ensure_default_model
    from dataflow.trainers.memory_check import parameters

    directory = ensure_default_model()
    model = AutoModelForCausalLM.from_pretrained(directory)
    real = sum(p.numel() for p in model.parameters() if p.dim() > 1)  # norms are a rounding error
    assert parameters(json.loads((directory / "config.json").read_text())) == real


def test_bad_input_is_one_paragraph_before_any_model_loads(sft_out, tmp_path, capsys):
    p = Pipeline("no_verifier")
    p.output("prompts", p.from_rows([{"prompt": [{"role": "user", "content": "1+1?"}], "answer": "2"}]),
             schema="prompt")
    user, answer = {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}
    p.output("sft_rows", p.from_rows([{"messages": [user, answer]}, {"messages": [user]}], name="sft_rows"),
             schema="sft")  # the second row ends with the user
    p.output("pairs", p.from_rows([{"prompt": [user], "chosen": [answer], "rejected": []}], name="pairs"),
             schema="preference")
    from tests.conftest import Builder

    Builder(tmp_path / "pv").build(p)
    common = ["--runs", str(tmp_path / "runs")]
    cases = {
        ("dpo", "train", "--out", str(sft_out)): "needs `prompt`, `chosen`, `rejected`",
        ("sft", "nothing", "--out", str(sft_out)): "no output named 'nothing'",
        ("sft", "train", "--out", str(sft_out), "--set", "epochz=1"): "did you mean epochs",
        ("sft", "train", "--out", str(sft_out), "--model", "openai:http://127.0.0.1:9/v1#m"): "cannot be trained",
        ("sft", "train", "--out", str(sft_out), "--set", "batch_size=100000"): "lower batch_size",
        ("grpo", "prompts", "--out", str(tmp_path / "pv")): "set verifier=math",
        ("sft", "train", "--out", str(tmp_path / "missing")): "no build found",
        ("sft", "sft_rows", "--out", str(tmp_path / "pv")): "1 of 2 rows of output 'sft_rows' are not sft records",
        ("dpo", "pairs", "--out", str(tmp_path / "pv")): "rejected: expected a non-empty list of turns",
        ("sft", "train", "--out", str(sft_out), "--model", "hf:"): "model 'hf:'",
        ("sft", "train", "--out", str(sft_out), "--model", f"hf:{tmp_path}"): "is not a saved Hugging Face model",
    }
    for args, message in cases.items():
        code, _, err = train(capsys, *args, *common)
        assert code == 1 and message in err and "Traceback" not in err, (args, err)
        assert err.count("\n") == 1, err  # one paragraph
    assert not (tmp_path / "runs").exists()  # nothing started
    assert pl.read_parquet(sft_out / "train" / "data.parquet").height > 0


def test_a_run_that_fails_says_so_in_its_record(sft_out, tmp_path, monkeypatch):
    from dataflow.trainers import train as training

    def broken(*args):
        raise RuntimeError("the trainer broke")

    monkeypatch.setattr(training, "_run", broken)
    with pytest.raises(RuntimeError, match="the trainer broke"):
        training.train("sft", "train", out=sft_out, runs=tmp_path / "runs", settings={"max_steps": "1"})
    record = read_run(find_run("last", tmp_path / "runs"))
    assert record["status"] == "failed" and "the trainer broke" in record["error"]  # not left "running"
