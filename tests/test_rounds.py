"""`dataflow iterate`: rounds of build -> train -> evaluate on the packaged model (the shipped RFT loop,
small), found again in the caches without a model call or a training step, a `rounds` view, early stops;
bad input stopped with its reason before any model work."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import polars as pl
import pytest

from dataflow.catalog import query
from dataflow.cli import main

pytest.importorskip("trl")
REPO = Path(__file__).resolve().parent.parent
SMALL = ["--set", "problems=12", "--set", "k=2", "--train-set", "max_steps=2",
         "--train-set", "batch_size=2", "--eval-set", "prompts=6", "--eval-set", "samples=1"]


def iterate(capsys, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["iterate", *args, "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs")])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def loop_record(tmp_path: Path) -> dict:
    [path] = (tmp_path / "out" / "rounds").glob("*/rounds.json")
    return json.loads(path.read_text())


def test_the_shipped_rft_loop_runs_two_rounds_and_a_second_run_redoes_nothing(capsys, tmp_path):
    code, out, err = iterate(capsys, tmp_path, str(REPO / "pipelines" / "rft_math.py"), "--rounds", "2",
                             "--patience", "2", *SMALL)
    assert code == 0, err
    record = loop_record(tmp_path)
    assert record["base"]["model"] == "local" and [e["round"] for e in record["rounds"]] == [1, 2]
    first, second = record["rounds"]
    assert first["generated_by"] == "local" and first["trained_from"] == "local"
    best_after_1 = first["run"] if first["kept"] else "local"
    assert second["generated_by"].endswith(best_after_1)  # round 2's data comes from the best model so far
    assert first["model_calls"] + first["cache_hits"] == 12 and first["seconds"]["training"] > 0  # requests
    for entry in record["rounds"]:
        low, high = entry["pass@1"]["ci95"]
        assert low <= entry["pass@1"]["value"] <= high
        assert entry["gain"] == pytest.approx(entry["pass@1"]["value"] - max(
            [record["base"]["value"]] + [e["pass@1"]["value"] for e in record["rounds"]
                                         if e["round"] < entry["round"] and e["kept"]]))
    assert "round " in out and "stopped: ran 2 round(s)" in out

    rounds = query(tmp_path / "out", "select round, train_on, value from rounds order by round")
    assert rounds["round"].to_list() == [0, 1, 2] and set(rounds["train_on"]) == {"verified"}
    assert rounds["value"].to_list() == [record["base"]["value"], first["pass@1"]["value"], second["pass@1"]["value"]]

    code, out, err = iterate(capsys, tmp_path, str(REPO / "pipelines" / "rft_math.py"), "--rounds", "2", *SMALL)
    assert code == 0, err
    again = loop_record(tmp_path)
    assert [e["run"] for e in again["rounds"]] == [first["run"], second["run"]]
    assert [e["resumed"]["model_calls"] for e in again["rounds"]] == [0, 0]  # everything came from the caches
    assert [e["model_calls"] for e in again["rounds"]] == [first["model_calls"], second["model_calls"]]
    assert out.count("already trained") == 2 and "training sft" not in out


def test_patience_stops_the_loop_when_rounds_gain_too_little(capsys, tmp_path):
    code, _, err = iterate(capsys, tmp_path, str(REPO / "pipelines" / "rft_math.py"), "--rounds", "3",
                           "--patience", "1", "--min-gain", "1.0", *SMALL)
    assert code == 0, err
    record = loop_record(tmp_path)
    assert len(record["rounds"]) == 1 and record["stopped"] == "1 round(s) in a row gained less than 1.0"


PIPELINE = """
    import polars as pl
    from dataflow import Pipeline

    p = Pipeline("tiny_loop")
    model = p.param("model", "local")
    keep = p.param("keep", 2)
    at_least = p.param("at_least", 0)
    questions = p.param("questions", "What is 2 + 2?|What is 3 + 5?")
    rows = [{{"messages": [{{"role": "user", "content": q}}, {{"role": "assistant", "content": "4"}}]}}
            for q in questions.split("|")]
    sft = p.from_rows(rows, name="rows").limit(keep, name="kept").gate(min_rows=at_least)
    held_out = p.from_rows([{{"question": "What is 3 + 5?", "answer": "8"}}], name="questions").map(
        prompt=pl.concat_list(pl.struct(role=pl.lit("user"), content=pl.col("question"))), name="prompts")
    p.output("sft", sft, schema="sft")
    p.output("held_out", held_out.select("id", "prompt", "answer", name="held_out_prompts"), schema="prompt")
    {rounds}
"""


def tiny_pipeline(tmp_path: Path, rounds: str = 'p.rounds(train="sft", evaluate="held_out")') -> str:
    path = tmp_path / "tiny_loop.py"
    path.write_text(textwrap.dedent(PIPELINE.format(rounds=rounds)))
    return str(path)


TINY_LOOP = ('p.rounds(train="sft", evaluate="held_out", config={"max_steps": 1, "batch_size": 2}, '
             'evaluation={"metrics": ["pass@k"], "k": 1, "samples": 1, "max_tokens": 8})')


def test_replay_trains_each_round_on_its_data_and_every_earlier_rounds(capsys, tmp_path):
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path, TINY_LOOP), "--rounds", "2", "--replay",
                           "--set", "questions=What is 1 + 3?|What is 2 + 2?")
    assert code == 0, err
    first, second = loop_record(tmp_path)["rounds"]
    assert (first["trained_rows"], second["trained_rows"]) == (2, 4)  # round 2: its 2 rows and round 1's 2
    [replayed] = (tmp_path / "out" / "rounds").glob("*/replay-2/replayed/data.parquet")
    rows = pl.read_parquet(replayed)
    assert sorted(rows["source"].to_list()) == ["round1", "round1", "round2", "round2"] and rows["id"].is_unique().all()


def test_training_data_that_shares_text_with_the_held_out_set_is_refused(capsys, tmp_path):
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path))
    assert code == 1
    assert "1 of 2 training rows of 'sft' share text with the held-out prompts of 'held_out'" in err
    assert "pass --allow-overlap to train anyway" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing trained, no model evaluated


def test_an_empty_round_stops_the_loop_with_its_reason(capsys, tmp_path):
    code, out, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path), "--set", "keep=0")
    assert code == 0, err
    record = loop_record(tmp_path)
    assert record["stopped"] == "round 1: the output 'sft' has no rows to train on" and record["rounds"] == []
    assert "best: the base model (no round improved)" in out


def test_a_round_whose_data_fails_a_gate_stops_the_loop_with_the_gate(capsys, tmp_path):
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path), "--set", "at_least=5")
    assert code == 0, err
    record = loop_record(tmp_path)
    assert record["stopped"].startswith("round 1: a gate failed, so its data is not used:") and not record["rounds"]
    assert "5" in record["stopped"]


@pytest.mark.parametrize("rounds, message", [
    ("", "the pipeline declares no rounds; add e.g. p.rounds("),
    ('p.rounds(train="nope", evaluate="held_out")', "train='nope' is not an output of the pipeline (its outputs: "
                                                    "sft, held_out)"),
    ('p.rounds(train="sft", evaluate="held_out", config={"epoch": 1})', "config field 'epoch' is not a sft config "
                                                                        "field"),
    ('p.rounds(train="held_out", evaluate="held_out")', "the sft trainer cannot train on output 'held_out': it holds "
                                                        "prompt records"),
])
def test_a_loop_declaration_that_cannot_work_is_named(capsys, tmp_path, rounds, message):
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path, rounds))
    assert code == 1 and message in err and "Traceback" not in err


def test_bad_loop_options_are_refused(capsys, tmp_path):
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path), "--train-set", "epoch=1")
    assert code == 1 and "unknown config key 'epoch'" in err and not (tmp_path / "out").exists()
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path), "--rounds", "0")
    assert code == 1 and "rounds must be a positive int, not 0" in err
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path), "--eval-set", "sample=3")
    assert code == 1 and "--eval-set sample: not an evaluation option" in err
    code, _, err = iterate(capsys, tmp_path, tiny_pipeline(tmp_path), "--set", "model=hf:/nope")
    assert code == 1 and "model='hf:/nope' (the loop's first model)" in err and not (tmp_path / "out").exists()
