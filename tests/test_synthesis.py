"""The synthesis operators with a scripted model: lineage, every dropped row in rejects with its
reason, the paper rules (Self-Instruct filters and novelty, Evol-Instruct elimination), Magpie
dedup between passes, dialogue turn failures with their index, constitutional pairs, and a
rebuild that makes no model call."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from dataflow import Pipeline
from dataflow.errors import DataflowError
from dataflow.llm import register_backend
from dataflow.llm.client import unload_backends
from dataflow.llm.types import Completion, Response
from dataflow.operator import Rejection
from dataflow.operators import (ConstitutionalRevision, EvolInstruct, Magpie, MultiTurnDialogue, SelfInstruct,
                                ToPreference, TopicTemplate)
from dataflow.operators.generation.base import Reply
from dataflow.operators.generation.self_instruct import (BLACKLIST, _instance, _json_tasks, _listed_tasks,
                                                         task_problem, unusable_item)

SEED_FILE = Path(__file__).resolve().parents[1] / "pipelines" / "data" / "seed_tasks.jsonl"

WORDS = ("river", "violin", "tax", "orbit", "garden", "ledger", "poem", "glacier", "compiler", "bakery", "sonnet",
         "harbor", "invoice", "quartz", "lantern", "meadow", "tariff", "galaxy", "pottery", "cipher", "canyon", "ferry",
         "atlas", "falcon", "mosaic", "prism", "summit", "tundra", "vortex", "walnut", "yacht", "zephyr")


def words(key: str, count: int) -> list[str]:
    """``count`` words drawn from a hash of ``key``."""
    digest = hashlib.sha256(key.encode()).digest()
    return [WORDS[b % len(WORDS)] for b in digest[:count]]


def proposed(prompt: str) -> list[str]:
    """The new tasks the scripted model proposes after the numbered tasks of ``prompt``: one novel
    task, a copy of the first example, and one failing each of three filters of the paper."""
    shown = re.findall(r"^\d+\. (.*)$", prompt, re.M)
    fresh = " ".join(words(prompt, 8))
    return [f"Write a short story that mentions {fresh}.", shown[0], "Draw a picture of a cat.", "Do it",
            "- list three fruits that are red", f"Classify the mood of {fresh[:20]}."]


def continued(prompt: str) -> str:
    """The scripted model's continuation of a numbered list of tasks (the prompt ends at "N."):
    the proposed tasks, numbered on, the first written over two lines."""
    first, *rest = proposed(prompt)
    start = int(re.search(r"(\d+)\.$", prompt).group(1))
    head = first.replace(" that ", "\n   that ", 1)
    return f" {head}" + "".join(f"\n{start + k}. {task}" for k, task in enumerate(rest, 1))


def reply(text: str) -> str:
    """What the scripted model writes for one prompt text."""
    if text.startswith("Write one instruction"):
        task = re.search(r"What the instruction should be: (.*)", text).group(1)
        return json.dumps({"instruction": "Hi" if "tax law" in task else f"Please write {task} today."})
    if text.startswith("Here are some example tasks"):
        return json.dumps({"tasks": proposed(text)})
    if text.startswith("Can the task be regarded"):
        return getattr(SynthBackend, "verdict", None) or json.dumps({"classification": "Classify" in text})
    if "This is a classification task" in text:
        return json.dumps({"label": "positive", "input": "What a lovely day."})
    if text.startswith("Task: "):
        return json.dumps({"input": "", "output": "Once upon a time."})
    if text.startswith("I want you to act as a prompt rewriter"):
        parent = text.split("Given prompt:\n", 1)[1].rsplit("\n\nReply with JSON", 1)[0]
        if "copycat" in parent:
            return json.dumps({"rewritten_prompt": f"Your #Rewritten Prompt#: {parent}"})
        return json.dumps({"rewritten_prompt": f"{parent} Give exactly three examples."})
    if text.startswith("I want you to act as a prompt creator"):
        return json.dumps({"created_prompt": "Explain how glaciers carve fjords to a ten-year-old."})
    if text.startswith("Here are two instructions"):
        if "undecided" in text:
            return json.dumps({"adds_something": "no"})  # not a verdict
        return json.dumps({"adds_something": "the same please" not in text})
    if text.startswith("Critique"):
        return json.dumps({"violates": "stupid" in text, "critique": "It insults the user." if "stupid" in text else
                           "It is fine."})
    if text.startswith("Rewrite an AI assistant's response"):
        return json.dumps({"revision": "Here is a kind and clear answer."})
    if text.startswith("You are role-playing a USER"):
        if getattr(SynthBackend, "user_message", None):
            return json.dumps({"message": SynthBackend.user_message})
        said = text.count("\nUSER: ") + text.startswith("USER: ")
        if "confused" in text and said == 1:
            return json.dumps({"message": "Assistant: I can help you with that.", "done": False})
        done = "impatient" in text and said >= 2
        message = {"message": f"Question {said} about my order?"}
        return json.dumps(message if said == 0 else {**message, "done": done})
    if "impossible" in text:
        return "Sorry, I cannot do that."
    if "stopwords" in text:
        return "the and of it"
    if "in silence" in text:
        return ""
    if "at length" in text:
        return " ".join(words(text, 30) * 10)  # 300 words
    return f"A full and careful answer to: {text[:60]}"


class SynthBackend:
    """Answers chat requests with ``reply`` and a raw Self-Instruct list with ``continued``, both cut
    to ``max_tokens`` words; another raw prompt (Magpie) with QUERIES by sample, the first request
    from the first."""

    QUERIES = ["How do I bake sourdough bread at home?", "How do I bake sourdough bread at home?",
               "How can I bake sourdough bread at home?", "What is the capital of Peru?", "ok"]
    calls = 0
    raw_prompts: list[str] = []
    raw_seeds: list[int] = []
    stops: list[tuple[str, ...]] = []  # the stop strings of every raw Self-Instruct list
    asked: list[str] = []  # the last message of every chat request

    def __init__(self, spec):
        self.chunk_size = 64

    def prepare(self, node, requests, labels):
        pass

    def generate(self, requests):
        SynthBackend.calls += len(requests)
        out = []
        for r in requests:
            finish = "stop"
            if r.prompt is not None and r.prompt.startswith("Come up with a series of diverse tasks"):
                SynthBackend.asked.append(r.prompt)
                SynthBackend.stops.append(r.sampling.stop)
                written = re.findall(r"\s*\S+", continued(r.prompt))
                finish = "length" if len(written) > r.sampling.max_tokens else "stop"
                texts = ["".join(written[:r.sampling.max_tokens])] * r.sampling.n
            elif r.prompt is not None:
                SynthBackend.raw_prompts.append(r.prompt)
                SynthBackend.raw_seeds.append(r.sampling.seed)
                offset = 7 * (len(SynthBackend.raw_prompts) - 1)  # a retry gets other queries
                texts = [self.QUERIES[(offset + k) % len(self.QUERIES)] for k in range(r.sampling.n)]
            else:
                SynthBackend.asked.append(r.messages[-1][1])
                written = re.findall(r"\s*\S+", reply(r.messages[-1][1]))
                finish = "length" if len(written) > r.sampling.max_tokens else "stop"
                texts = ["".join(written[:r.sampling.max_tokens])] * r.sampling.n
            out.append(Response([Completion(t, finish, len(t.split())) for t in texts], 10))
        return out


register_backend("synth", SynthBackend, lambda spec: "synth")
MODEL = "synth:"


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLOW_LLM_CACHE", str(tmp_path / "llm_cache.sqlite"))
    SynthBackend.calls, SynthBackend.asked, SynthBackend.stops = 0, [], []
    SynthBackend.raw_prompts, SynthBackend.raw_seeds = [], []
    unload_backends()
    yield
    unload_backends()


def build(builder, op, rows, name="synth", rebuild=()):
    p = Pipeline("synthesis")
    p.output("out", p.from_rows(rows, name="src").apply(op, name=name))
    return builder.build(p, rebuild=rebuild)


def node_metrics(report, name="synth") -> dict:
    return next(s.metrics for s in report.stats if s.name == name)


def rouge_l(a: str, b: str) -> float:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score(a, b)["rougeL"].fmeasure


# -- topic x template --------------------------------------------------------------------

TEMPLATES = {"howto": "a how-to question about {topic} for a {level}", "compare": "a comparison of two ideas in {topic}"}


def test_topic_template_writes_an_instruction_per_topic_template_and_sample_with_lineage(builder):
    op = TopicTemplate(templates=TEMPLATES, slots={"level": ["beginner", "expert"]}, per_topic=3, model=MODEL)
    report = build(builder, op, [{"topic": t, "area": "x"} for t in ("rust", "baking", "tax law", None)])
    out = builder.output("out").sort("id")
    assert out.height == 6  # tax law: every instruction too short, rejected
    rust = out.filter(out["source_id"] == "src-1").sort("sample_idx")
    used = rust["template_id"].to_list()
    assert used in (["howto", "compare", "howto"], ["compare", "howto", "compare"])  # a seeded start, then in turn
    first = rust.row(0, named=True)
    assert first["id"] == f"src-1/{used[0]}/0" and first["topic"] == "rust" and first["area"] == "x"
    assert first["instruction"] == f"Please write {first['task']} today."
    howto = out.filter(out["template_id"] == "howto")
    assert all(json.loads(v)["level"] in ("beginner", "expert") for v in howto["slot_values"])
    assert all(json.loads(v)["level"] in t for v, t in zip(howto["slot_values"], howto["task"]))
    rejects = builder.rejects("synth").sort("id")
    assert sorted(re.sub(r"/\w+/", "/", i) for i in rejects["id"]) == ["src-3/0", "src-3/1", "src-3/2", "src-4"]
    assert rejects["reason"].to_list() == ["schema_mismatch"] * 3 + ["empty_topic"]  # "Hi": too short
    metrics = node_metrics(report)
    assert metrics["topics_covered"] == pytest.approx(2 / 4, abs=1e-3)
    assert metrics["per_template"] == dict(sorted(Counter(out["template_id"]).items()))
    assert 0 < metrics["distinct_2"] <= 1


def test_every_template_is_used_when_a_topic_asks_fewer_instructions_than_there_are_templates(builder):
    templates = {"a": "a riddle about {topic}", "b": "a poem about {topic}", "c": "a quiz about {topic}"}
    op = TopicTemplate(templates=templates, per_topic=1, model=MODEL)
    build(builder, op, [{"topic": f"t{i}"} for i in range(60)])
    assert set(builder.output("out")["template_id"]) == {"a", "b", "c"}


def test_a_topic_row_with_a_null_slot_column_is_a_reject_not_the_text_none(builder):
    op = TopicTemplate(templates={"t": "a question about {topic} for {audience}"}, per_topic=1, model=MODEL)
    build(builder, op, [{"topic": "rust", "audience": None}, {"topic": "go", "audience": "students"}])
    assert builder.rejects("synth").select("id", "reason").rows() == [("src-1", "empty_slot")]
    assert builder.output("out")["task"].to_list() == ["a question about go for students"]


@pytest.mark.parametrize("change, named", [
    ({"templates": {"t": "about {topic} and {}"}}, "unnamed slot"),
    ({"templates": {"t": "about {topic"}}, "does not parse"),
    ({"templates": {"t": " "}}, "is empty"), ({"slots": {"level": "expert"}}, "list of values"),
    ({"min_words": -5}, "min_words")])
def test_topic_template_parameters_are_checked_at_compile_time(builder, change, named):
    op = TopicTemplate(**{"templates": {"t": "a question about {topic}"}, "model": MODEL, **change})
    with pytest.raises(DataflowError, match=named):
        build(builder, op, [{"topic": "rust"}])
    assert SynthBackend.calls == 0


def test_a_template_slot_with_no_column_and_no_values_fails_at_compile_time(builder):
    op = TopicTemplate(templates={"t": "a question about {topic} for {audience}"}, model=MODEL)
    with pytest.raises(DataflowError, match="audience"):
        build(builder, op, [{"topic": "rust"}])


# -- self-instruct -----------------------------------------------------------------------

SEEDS = ["Write a haiku about the first snow of winter.", "Explain why the sky looks blue during the day.",
         "Summarize the plot of a famous novel in three sentences.", "Give me five tips for a job interview.",
         "Translate the phrase good morning into Spanish and French.", "List the planets of the solar system in order.",
         "Suggest a name for a small coffee shop near the sea.", "Describe how a bill becomes a law in simple words."]


@pytest.mark.parametrize("style", ["list", "json"])
def test_self_instruct_rounds_filter_by_the_paper_rules_and_novelty_across_rounds(builder, style):
    op = SelfInstruct(model=MODEL, style=style, target=6, per_prompt=6, prompts_per_round=2, max_rounds=5)
    report = build(builder, op, [{"instruction": s} for s in SEEDS])
    out = builder.output("out")
    assert out.height >= 6  # the round that reaches the target keeps all its tasks
    rejects = builder.rejects("synth")
    reasons = Counter(rejects["reason"])
    assert {"not_novel", "blacklisted", "too_short", "starts_with_punctuation"} <= set(reasons)
    copied = rejects.filter(rejects["reason"] == "not_novel")
    for detail in copied["detail"]:
        found = json.loads(detail)
        assert found["rouge_l"] > 0.7 and found["most_similar"] in SEEDS + out["instruction"].to_list()
    kept = out["instruction"].to_list()
    for i, text in enumerate(kept):  # brute force: novel against the seeds and every task kept before it
        assert all(rouge_l(text, other) <= 0.7 for other in SEEDS + kept[:i])
    assert out.filter(out["instruction"].str.starts_with("Classify"))["is_classification"].all()
    assert set(out.filter(out["is_classification"])["output"]) == {"positive"}
    assert all(set(ids) & {f"src-{i}" for i in range(1, 9)} for ids in out["context_ids"])
    assert out["instruction"].str.starts_with("Write a short story that mentions").sum() >= 2  # the 2-line item
    assert {len(ids) for ids in out["context_ids"]} == {8}  # 6 seeds and 2 kept tasks, or seeds in their place
    metrics = node_metrics(report)
    assert metrics["stopped"] == "target (6)" and metrics["tasks_kept"] == out.height
    calls = SynthBackend.calls
    build(builder, op, [{"instruction": s} for s in SEEDS], rebuild=("synth",))
    assert SynthBackend.calls == calls  # the rebuild is answered by the request cache


def test_a_task_cut_off_by_max_tokens_is_a_reject_and_the_tasks_before_it_are_kept(builder):
    op = SelfInstruct(model=MODEL, target=1, per_prompt=6, prompts_per_round=1, max_rounds=1, instances=False,
                      max_tokens=17)  # the scripted list is cut inside its second task
    build(builder, op, [{"instruction": s} for s in SEEDS])
    out, rejects = builder.output("out"), builder.rejects("synth")
    assert out["instruction"].str.starts_with("Write a short story that mentions").all() and out.height == 1
    assert rejects.select("id", "reason").rows() == [("r1/p0/1", "cut_off")]
    assert "max_tokens (17)" in rejects["detail"][0]
    shown = r"(\d\. [^\n]+\n){8}9\."  # 8 numbered tasks, then the number to continue from
    assert re.fullmatch(rf"Come up with a series of diverse tasks [^\n]+:\n\n{shown}", SynthBackend.asked[0])
    assert SynthBackend.stops == [("\n\n", "\n15.")]  # a blank line, or item 9 + per_prompt


def test_listed_tasks_are_the_numbered_items_of_the_continued_list_in_random_layouts():
    tasks = [json.loads(line)["instruction"] for line in SEED_FILE.read_text().splitlines()]
    chooser = random.Random(7)
    for _ in range(200):
        items, start = chooser.sample(tasks, chooser.randint(1, 8)), chooser.randint(2, 12)
        lines = []
        for k, item in enumerate(items):  # an item over several lines; numbers spaced in several ways
            words_ = item.split()
            cut = chooser.randint(1, len(words_))
            body = " ".join(words_[:cut]) + ("\n" + chooser.choice(["", "  "]) + " ".join(words_[cut:])
                                             if cut < len(words_) else "")
            number = "" if k == 0 else f"{chooser.choice(['', ' '])}{start + k}{chooser.choice(['', ' '])}."
            lines.append(f"{number}{chooser.choice([' ', '  ', chr(9)])}{body}")
        text = "\n".join(lines)
        finish = chooser.choice(["stop", "length"])
        got = _listed_tasks(Reply(text, finish, None, None, MODEL, 0), {"next": start})
        expected = [" ".join(item.split()) for item in items]  # brute force: the items, whitespace collapsed
        if finish == "length":
            expected, cut_off = expected[:-1], expected[-1]
        else:
            cut_off = None
        assert got == {"tasks": expected, "cut_off": cut_off}, text


@pytest.mark.parametrize(("text", "parsed"), [
    ('{"tasks": ["1. Write a poem about rain.", "Explain tides to a ch', (["Write a poem about rain."],
                                                                         "Explain tides to a ch")),
    ('{"tasks": ["Write a poem about rain.", ', (["Write a poem about rain."], None)),
    ('{"tas', None)])
def test_a_json_list_cut_by_max_tokens_keeps_its_complete_tasks_and_names_the_cut_one(text, parsed):
    reply = Reply(text, "length", None, None, MODEL, 0)
    if parsed is None:
        with pytest.raises(Rejection, match="no_tasks"):
            _json_tasks(reply, {})
        return
    assert _json_tasks(reply, {}) == {"tasks": parsed[0], "cut_off": parsed[1]}


@pytest.mark.parametrize(("text", "classification", "reason"), [
    ('{"input": "input", "output": "output"}', False, "placeholder_instance"),
    ('{"input": "", "output": " Output "}', False, "placeholder_instance"),
    ('{"label": "label", "input": "A fine day."}', True, "placeholder_instance"),
    ('{"input": "Paris", "output": " "}', False, "empty_output"),
    ('{"input": {"text": "abc"}, "output": "A."}', False, "not_text"),
    ('{"input": "Paris", "output": ["a", "b"]}', False, "not_text"),
    ('{"input": " Paris ", "output": "The capital of France."}', False, None)])
def test_an_instance_that_only_repeats_its_field_names_is_rejected(text, classification, reason):
    reply = Reply(text, "stop", None, None, MODEL, 0)
    if reason is None:
        assert _instance(reply, {"is_classification": classification}) == {"input": "Paris",
                                                                              "output": "The capital of France."}
        return
    with pytest.raises(Rejection) as caught:
        _instance(reply, {"is_classification": classification})
    assert caught.value.reason == reason


@pytest.mark.parametrize("style, text", [
    ("json", '{"tasks": ["Write a poem about the moon tonight.", 7, null, ["a"], "", "  "]}'),
    ("list", " Write a poem about the moon tonight.\n10. \n11.")])
def test_listed_items_that_are_no_task_text_are_rejects_of_their_own(style, text):
    op = SelfInstruct(model=MODEL, style=style, instances=False)
    parse = _json_tasks if style == "json" else _listed_tasks
    tasks = parse(Reply(text, "stop", None, None, MODEL, 0), {"next": 9})["tasks"]
    reasons = [(unusable_item(t) or ("task", ""))[0] for t in tasks]
    expected = {"json": ["task", "not_a_task", "not_a_task", "not_a_task", "empty_task", "empty_task"],
                "list": ["task", "empty_task", "empty_task"]}
    assert reasons == expected[style] and op.style == style
    with pytest.raises(Rejection, match="no_tasks"):  # nothing usable: the reply is asked again
        nothing = text.replace("Write a poem about the moon tonight.", "")
        parse(Reply(nothing, "stop", None, None, MODEL, 0), {"next": 9})


@pytest.mark.parametrize("text, reason", [
    ("I'm sorry, but I cannot come up with new tasks right now.", "assistant_voice"),
    ("Sure! Here are some new tasks for you:", "assistant_voice"), ("Here are 5 new tasks to try:", "assistant_voice"),
    ("Here are three sentences: classify each as formal or informal.", None),
    ("Sort the following numbers from the smallest to the largest.", None)])
def test_a_listed_item_in_the_models_own_voice_is_no_task(text, reason):
    found = task_problem(text, 4, 150, BLACKLIST)
    assert (found[0] if found else None) == reason


def test_a_task_whose_classification_is_no_verdict_is_a_reject(builder, monkeypatch):
    monkeypatch.setattr(SynthBackend, "verdict", '{"classification": "yes"}', raising=False)
    op = SelfInstruct(model=MODEL, target=1, per_prompt=6, prompts_per_round=1, max_rounds=1)
    build(builder, op, [{"instruction": s} for s in SEEDS])
    rejects = builder.rejects("synth")
    assert builder.output("out").height == 0
    assert set(rejects.filter(rejects["reason"] == "bad_classification")["id"]) == {"r1/p0/0", "r1/p0/5"}
    details = rejects.filter(rejects["reason"] == "bad_classification")["detail"]
    assert all(d.startswith("classification: ") for d in details)


@pytest.mark.parametrize("change, named", [
    ({"generated_examples": -1}, "generated_examples"), ({"min_new": -3}, "min_new"), ({"min_words": 0}, "min_words"),
    ({"min_words": 50, "max_words": 10}, "max_words"), ({"blacklist": "image"}, "blacklist"),
    ({"header": " "}, "header")])
def test_self_instruct_parameters_are_checked_at_compile_time(builder, change, named):
    with pytest.raises(DataflowError, match=named):
        build(builder, SelfInstruct(model=MODEL, **change), [{"instruction": s} for s in SEEDS])
    assert SynthBackend.calls == 0


def test_self_instruct_with_no_usable_seed_says_so(builder):
    with pytest.raises(DataflowError, match="no seed task has a non-empty 'instruction'"):
        build(builder, SelfInstruct(model=MODEL), [{"instruction": " "}])


# -- evol-instruct -----------------------------------------------------------------------

def test_evol_instruct_lineage_and_the_four_elimination_rules(builder):
    rows = [{"instruction": "Explain photosynthesis to a child."}, {"instruction": "copycat: name a river."},
            {"instruction": "Keep it the same please."}, {"instruction": "Do the impossible thing."},
            {"instruction": "Answer with stopwords only."}]
    op = EvolInstruct(model=MODEL, generations=2, operations=("add_constraints",))
    build(builder, op, rows)
    out = builder.output("out").sort("id")
    assert out["id"].to_list() == ["src-1/g1", "src-1/g2"]
    assert out["parent_id"].to_list() == ["src-1", "src-1/g1"] and set(out["root_id"]) == {"src-1"}
    assert out["instruction"][1] == "Explain photosynthesis to a child. Give exactly three examples. " \
                                    "Give exactly three examples."
    assert out["generation"].to_list() == [1, 2] and set(out["operation"]) == {"add_constraints"}
    reasons = dict(zip(*builder.rejects("synth").select("id", "reason").to_dict(as_series=False).values()))
    assert reasons["src-2/g1"] == "copied_template" and reasons["src-3/g1"] == "no_information_gain"
    assert reasons["src-4/g1"] == "model_cannot_answer" and reasons["src-5/g1"] == "response_only_stop_words"
    assert reasons["src-2/g2"] == "copied_template"  # a failed generation evolves its parent again
    assert "Keep it the same please. Give exactly three examples." not in SynthBackend.asked  # equal: not answered
    assert "Do the impossible thing. Give exactly three examples." in SynthBackend.asked


def test_an_evolution_without_a_verdict_or_an_answer_is_a_reject_that_says_so(builder):
    rows = [{"instruction": "An undecided question about tea."}, {"instruction": "Answer me in silence, please."}]
    build(builder, EvolInstruct(model=MODEL, generations=1, operations=("add_constraints",)), rows)
    assert builder.output("out").height == 0
    rejects = {r["id"]: r for r in builder.rejects("synth").iter_rows(named=True)}
    assert rejects["src-1/g1"]["reason"] == "bad_verdict" and rejects["src-1/g1"]["detail"].startswith("rule 1 ")
    assert rejects["src-2/g1"]["reason"] == "empty_response"


def test_an_evolution_whose_answer_is_cut_by_response_tokens_is_a_reject_that_says_so(builder):
    rows = [{"instruction": "Explain the tides at length."}]
    build(builder, EvolInstruct(model=MODEL, generations=1, operations=("add_constraints",)), rows)
    assert builder.output("out").height == 0
    reject = builder.rejects("synth").row(0, named=True)
    assert reject["reason"] == "truncated_response" and "response_tokens (256)" in reject["detail"]
    build(builder, EvolInstruct(model=MODEL, generations=1, operations=("add_constraints",), response_tokens=400),
          rows, name="longer")
    assert len(builder.output("out")["response"][0].split()) == 300


# -- magpie ------------------------------------------------------------------------------

def test_magpie_sends_the_raw_pre_query_and_dedups_between_the_passes(builder):
    op = Magpie(model=MODEL, pre_query="<|im_start|>user\n", per_row=5)
    build(builder, op, [{"n": 1}])
    assert set(SynthBackend.raw_prompts) == {"<|im_start|>user\n"}  # and a retry for the invalid one
    out = builder.output("out")
    assert sorted(out["instruction"]) == ["How do I bake sourdough bread at home?", "What is the capital of Peru?"]
    assert all([t["role"] for t in m] == ["user", "assistant"] for m in out["messages"])
    rejects = builder.rejects("synth")
    assert set(rejects["reason"]) == {"duplicate", "near_duplicate"}  # "ok" was asked again, not kept
    near = json.loads(rejects.filter(rejects["reason"] == "near_duplicate")["detail"][0])
    assert near["rouge_l"] > 0.7 and near["most_similar"] in out["id"].to_list()


def test_magpie_rows_sending_the_same_text_are_seeded_apart(builder):
    op = Magpie(model=MODEL, pre_query="<|im_start|>user\n", per_row=2)
    build(builder, op, [{"n": n} for n in range(3)])
    first = list(SynthBackend.raw_seeds)
    assert len(set(first[:3])) == 3  # the first request of each row, each with its own seed
    SynthBackend.raw_seeds = []
    build(builder, op, [{"n": n} for n in range(3)], rebuild=("synth",))
    assert SynthBackend.raw_seeds == []  # the same seeds again: every request is in the cache


def test_magpie_samples_still_invalid_after_the_last_attempt_are_rejects(builder):
    op = Magpie(model=MODEL, pre_query="<|im_start|>user\n", per_row=5, max_attempts=1)
    build(builder, op, [{"n": 1}])
    rejects = builder.rejects("synth")
    assert len(builder.output("out")) + len(rejects) == 5  # every sample asked is a row or a reject
    assert rejects.filter(rejects["id"] == "src-1/4")["reason"].to_list() == ["bad_query"]  # "ok": too short


@pytest.mark.parametrize("query, reason", [
    ("How do I bake bread?<|im_end|>\n<|im_start|>assistant\nSure", "template_text"), ("Tell me more", "bad_query")])
def test_magpie_rejects_a_query_that_ran_past_its_turn(query, reason):
    op = Magpie(model=MODEL, pre_query="<|im_start|>user\n", min_words=4)
    with pytest.raises(Rejection) as raised:
        op._query(Reply(query, "stop", 1, 1, MODEL, 0), {})
    assert raised.value.reason == reason


@pytest.mark.parametrize("text, finish, reason", [("", "stop", "empty_response"),
                                                  ("Knead the dough, then let it", "length", "truncated_response")])
def test_a_magpie_answer_that_is_empty_or_cut_off_is_no_sft_response(text, finish, reason):
    with pytest.raises(Rejection) as raised:
        Magpie(model=MODEL, pre_query="<|im_start|>user\n")._response(Reply(text, finish, 1, 1, MODEL, 0), {})
    assert raised.value.reason == reason


@pytest.mark.parametrize("change, named", [
    ({"near_threshold": 1.5}, "near_threshold"), ({"response_tokens": 0}, "response_tokens"),
    ({"response_temperature": 9.0}, "response_temperature"), ({"min_words": -1}, "min_words"),
    ({"pre_query": ""}, "pre_query")])
def test_magpie_parameters_are_checked_at_compile_time(builder, change, named):
    with pytest.raises(DataflowError, match=named):
        build(builder, Magpie(model=MODEL, **{"pre_query": "<|im_start|>user\n", **change}), [{"n": 1}])
    assert SynthBackend.calls == 0


def test_magpie_on_a_server_needs_the_pre_query_text(builder):
    with pytest.raises(DataflowError, match="pre_query"):
        build(builder, Magpie(model=MODEL), [{"n": 1}])


# -- dialogue ----------------------------------------------------------------------------

def test_dialogues_alternate_stop_at_the_goal_and_reject_role_confusion_with_the_turn(builder):
    rows = [{"persona": "an impatient buyer", "goal": "track an order", "scenario": "a late parcel"},
            {"persona": "a calm buyer", "goal": "track an order", "scenario": "a late parcel"},
            {"persona": "a confused buyer", "goal": "track an order", "scenario": "a late parcel"}]
    build(builder, MultiTurnDialogue(model=MODEL, turns=4), rows)
    out = builder.output("out").sort("id")
    assert out["ended"].to_list() == ["goal_reached", "max_turns"]
    for messages, turns in zip(out["messages"], out["turns"]):
        roles = [t["role"] for t in messages]
        assert roles == ["system"] + ["user", "assistant"] * turns
    assert out["turns"].to_list() == [2, 4]
    rejects = builder.rejects("synth")
    assert rejects.select("id", "reason").row(0) == ("src-3", "role_confusion")
    assert rejects["detail"][0].startswith("turn 2:")  # the confused buyer's second message


@pytest.mark.parametrize("message, kept", [
    ("**Assistant:** I can help you with that.", None), ("USER: Where is it?\nASSISTANT: It ships tomorrow.", None),
    ("User: Where is my parcel?", "Where is my parcel?"), ("Where is my parcel, and why is it late?", "same")])
def test_a_simulated_user_writing_as_the_assistant_on_any_line_is_role_confusion(builder, monkeypatch, message, kept):
    monkeypatch.setattr(SynthBackend, "user_message", message, raising=False)
    row = {"persona": "a buyer", "goal": "track", "scenario": "late"}
    build(builder, MultiTurnDialogue(model=MODEL, turns=1), [row])
    out, rejects = builder.output("out"), builder.rejects("synth")
    if kept is None:
        assert out.height == 0 and rejects.select("reason", "detail").row(0)[0] == "role_confusion"
        assert rejects["detail"][0].startswith("turn 1:")
    else:
        assert out["messages"][0][1]["content"] == (message if kept == "same" else kept)


def test_a_dialogue_whose_assistant_turn_is_cut_by_max_tokens_is_rejected_with_the_turn(builder, monkeypatch):
    monkeypatch.setattr(SynthBackend, "user_message", "Tell me about the parcel at length.", raising=False)
    build(builder, MultiTurnDialogue(model=MODEL, turns=1), [{"persona": "a buyer", "goal": "track", "scenario": "late"}])
    assert builder.output("out").height == 0
    reject = builder.rejects("synth").row(0, named=True)
    assert reject["reason"] == "truncated_response" and reject["detail"].startswith("turn 1:")
    assert "max_tokens (200)" in reject["detail"]


def test_a_dialogue_row_with_an_empty_field_is_a_reject_and_asks_nothing(builder):
    rows = [{"persona": None, "goal": "track", "scenario": "late"}, {"persona": "a buyer", "goal": "track",
                                                                     "scenario": "late"}]
    build(builder, MultiTurnDialogue(model=MODEL, turns=1), rows)
    assert builder.rejects("synth").select("id", "reason").rows() == [("src-1", "empty_field")]
    assert builder.output("out")["id"].to_list() == ["src-2"]
    assert not any("None" in text for text in SynthBackend.asked)


# -- constitutional revision -------------------------------------------------------------

def test_constitutional_revision_revises_violations_into_sft_rows_and_pairs(builder):
    rows = [{"prompt": "How do I fix my bike?", "response": "That is a stupid question."},
            {"prompt": "What is 2+2?", "response": "4"}]
    p = Pipeline("constitution")
    revised = p.from_rows(rows, name="src").apply(ConstitutionalRevision(model=MODEL), name="synth")
    p.output("out", revised)
    p.output("pairs", revised.filter(revised_column()).apply(ToPreference(chosen="revision", rejected="response")))
    builder.build(p)
    out = builder.output("out").sort("id")
    assert out["revised"].to_list() == [True, False]
    assert out["revision"].to_list() == ["Here is a kind and clear answer.", "4"]
    assert out["critique"][0] == "It insults the user." and out["principle"][0]
    pair = builder.output("pairs").row(0, named=True)
    assert pair["chosen"][0]["content"] == "Here is a kind and clear answer."
    assert pair["rejected"][0]["content"] == "That is a stupid question."


def test_a_revision_that_repeats_the_response_and_a_row_with_nothing_to_revise_are_rejects(builder):
    rows = [{"prompt": "Why is this so stupid?", "response": "Here is a kind and clear answer."},  # revised: the same
            {"prompt": "Anything?", "response": " "}]
    build(builder, ConstitutionalRevision(model=MODEL), rows)
    assert builder.output("out").height == 0
    assert builder.rejects("synth").sort("id").select("id", "reason").rows() == [("src-1", "unchanged_revision"),
                                                                               ("src-2", "empty_field")]


@pytest.mark.parametrize("change", [{"principles": "Be kind"}, {"principles": ("", "  ")}, {"principles": ()}])
def test_constitutional_principles_are_checked_at_compile_time(builder, change):
    with pytest.raises(DataflowError, match="principle"):
        build(builder, ConstitutionalRevision(model=MODEL, **change), [{"prompt": "Hi?", "response": "Hello."}])


def revised_column():
    import polars as pl

    return pl.col("revised")


@pytest.mark.parametrize("op, message", [
    (SelfInstruct(model=MODEL, target=0), "target must be a positive int, not 0"),
    (SelfInstruct(model=MODEL, style="chat"), "style must be 'list' .* or 'json'"),
    (EvolInstruct(model=MODEL, operations=("shout",)), "operations must be some of"),
    (TopicTemplate(templates={}, model=MODEL), "give at least one template"),
    (MultiTurnDialogue(model=MODEL, turns=0), "turns must be a positive int"),
    (ConstitutionalRevision(model=MODEL, principles=()), "give at least one principle"),
])
def test_bad_arguments_are_compile_errors_that_say_what_to_do(builder, op, message):
    rows = [{"instruction": "x", "topic": "t", "persona": "p", "goal": "g", "scenario": "s", "prompt": "q",
             "response": "r"}]
    with pytest.raises(DataflowError, match=message):
        build(builder, op, rows)
    assert SynthBackend.calls == 0


def test_a_dialogue_that_must_reach_its_goal_and_never_does_is_rejected(builder):
    rows = [{"persona": "a calm buyer", "goal": "track an order", "scenario": "a late parcel"}]
    build(builder, MultiTurnDialogue(model=MODEL, turns=2, require_goal=True), rows)
    assert builder.output("out").height == 0
    assert builder.rejects("synth").select("reason", "detail").row(0) == (
        "no_stop", "the goal was not reached in 2 user turns")


@pytest.mark.parametrize("seed", range(20))
def test_json_in_a_reply_is_found_whole_nested_or_among_prose(seed):
    """Objects of random nesting, strings holding braces, between prose and broken braces: every object is
    found whole, in order; a field is taken from the first object holding it."""
    from dataflow.operators.generation.base import json_objects
    from dataflow.operators.generation.replies import reply_json

    rng = random.Random(seed)

    def value(depth: int):
        kind = rng.choice(["s", "n", "l", "d"] if depth < 3 else ["s", "n"])
        return {"s": lambda: rng.choice(["a", "b {c}", "} {", ""]), "n": lambda: rng.randint(-9, 9),
                "l": lambda: [value(depth + 1) for _ in range(rng.randint(0, 2))],
                "d": lambda: {f"k{i}": value(depth + 1) for i in range(rng.randint(0, 2))}}[kind]()

    objects = [{f"f{i}": value(0) for i in range(rng.randint(1, 3))} for _ in range(rng.randint(1, 3))]
    prose = ["Here it is:", "{ not json", "and }", "note {x}"]
    text = " ".join(rng.choice(prose) + " " + json.dumps(o) for o in objects) + " " + rng.choice(prose)
    assert list(json_objects(text)) == objects
    reply = Reply(text, "stop", None, None, "m", 0)
    holder = next(o for o in objects if "f0" in o)
    assert reply_json(reply, "f0") == holder["f0"]
    with pytest.raises(Rejection, match="no JSON field 'absent'"):
        reply_json(reply, "absent")
