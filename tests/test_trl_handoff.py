"""Outputs in the canonical preference and prompt schemas load into TRL's DPOTrainer and
GRPOTrainer as they are, and train for a step with the packaged default model."""

from __future__ import annotations

import polars as pl
import pytest

from dataflow import Pipeline
from dataflow.operators import PassRate, PreferencePairs, learnable_band

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def model_dir():
    from dataflow.llm.convert import ensure_default_model

    return str(ensure_default_model(log=lambda message: None))


def load(builder, output: str):
    return datasets.load_dataset("parquet", data_files=str(builder.out / output / "data.parquet"), split="train")


def trainer_args(config_class, tmp_path, **extra):
    return config_class(output_dir=str(tmp_path / "trainer"), max_steps=1, per_device_train_batch_size=2,
                        learning_rate=1e-6, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                        logging_steps=1, **extra)


def test_preference_pairs_train_with_dpo(builder, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    candidates = [{"prompt_id": f"q{i}", "prompt": q, "response": r, "score": s}
                  for i, (q, answers) in enumerate([("What is 2+2?", [("4", 9.0), ("5", 1.0)]),
                                                    ("Capital of France?", [("Paris", 8.0), ("Rome", 2.0)])])
                  for r, s in answers]
    p = Pipeline("dpo")
    p.output("pairs", p.from_rows(candidates, name="candidates").apply(PreferencePairs(), name="pairs_node"))
    builder.build(p)
    dataset = load(builder, "pairs")
    assert dataset.num_rows == 2
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir),
                             args=trainer_args(trl.DPOConfig, tmp_path, max_length=64),
                             train_dataset=dataset, processing_class=tokenizer)
    assert trainer.train().global_step == 1


def test_prompt_set_trains_with_grpo(builder, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    samples = [{"prompt_id": f"m{i}", "prompt": [{"role": "user", "content": q}], "answer": a, "reward": r}
               for i, (q, a) in enumerate([("What is 3+4?", "7"), ("What is 10-6?", "4")]) for r in (1.0, 0.0)]
    p = Pipeline("grpo")
    rates = p.from_rows(samples, name="samples").apply(PassRate(), name="rates")
    p.output("prompts", rates.apply(learnable_band(), name="band"))
    builder.build(p)
    dataset = load(builder, "prompts")
    assert dataset.num_rows == 2 and set(dataset.column_names) >= {"prompt", "answer"}

    def exact_answer(prompts, completions, answer, **columns):
        return [float(a in c[0]["content"]) for c, a in zip(completions, answer)]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = trl.GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=[exact_answer],
                              args=trainer_args(trl.GRPOConfig, tmp_path, num_generations=2,
                                                generation_batch_size=2, max_completion_length=8),
                              train_dataset=dataset, processing_class=tokenizer)
    assert trainer.train().global_step == 1
    assert pl.read_parquet(builder.out / "prompts" / "data.parquet")["pass_rate"].to_list() == [0.5, 0.5]
