"""``dataflow iterate PIPELINE.py --rounds N``: rounds of build -> train -> evaluate, as the pipeline's
``p.rounds(...)`` declares. Round r builds the pipeline with its model parameter bound to the best model
so far (the base model in round 1), trains that model on the round's training output, and evaluates the
new model on the held-out output of round 1 (one set for the whole loop). The new model is kept only if it
scores higher than the best so far; the loop stops after ``patience`` rounds in a row that gained less than
``min_gain``, or at a round whose data is empty or fails a gate (the best model is kept).

Everything is content-addressed: a round's build is a normal build (its nodes and model calls cached), its
training run is named by its data, base model and config (``trainers/runs.py``), its evaluation by the model
and data. Running the same command again after a kill redoes nothing that finished: finished rounds are
found in the caches (no model call, no training step), a killed training resumes from its last checkpoint.

    <out>/rounds/<pipeline>-<hash>/     the loop (the hash: pipeline, settings, base model, trainer, config)
        round-<r>/                      round r's build folder (dataflow query --out ... "select * from samples")
        overlap-<r>/                    the decontamination of round r's training data against the held-out set
        replay-<r>/                     with --replay: round r's data plus every earlier round's
        rounds.json                     the loop record: the base evaluation, each round, the best model
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from dataflow.build import build, load_pipeline
from dataflow.catalog import query
from dataflow.errors import DataflowError, GateError
from dataflow.operators import Decontaminate
from dataflow.pipeline import Pipeline, RoundsSpec
from dataflow.progress import Progress
from dataflow.records import LOOPS, ROUNDS_RECORD, now, read_manifest, read_record, write_record
from dataflow.trainers.config import CONFIGS, load_config
from dataflow.trainers.evaluation import EvalOptions, evaluate
from dataflow.trainers.inputs import BuildOutput, find_output, require_schema
from dataflow.trainers.runs import MODEL, RUNS, read_run, resolve_model, trainable_dir
from dataflow.trainers.train import ACCEPTS, COLUMNS, train

METRIC = "pass@1"


@dataclass(frozen=True)
class LoopOptions:
    """How many rounds, when to stop, and what each round trains on."""

    rounds: int = 3
    patience: int = 2  # stop after this many rounds in a row that gained less than min_gain
    min_gain: float = 0.01  # in the metric's units (pass@1: a share)
    train_on: str | None = None  # the training output (default: the pipeline's p.rounds(train=...))
    replay: bool = False  # train round r on its data plus every earlier round's
    allow_overlap: bool = False  # train even if the training data shares text with the held-out set

    def problems(self) -> list[str]:
        found = [f"{name} must be a positive int, not {getattr(self, name)!r}" for name in ("rounds", "patience")
                 if not isinstance(getattr(self, name), int) or getattr(self, name) < 1]
        return found + ([] if self.min_gain >= 0 else [f"min_gain must be at least 0, not {self.min_gain}"])


def iterate(file: Path | str, options: LoopOptions = LoopOptions(), settings: dict[str, str] | None = None,
            train_settings: dict[str, str] | None = None, eval_settings: dict[str, str] | None = None,
            out: Path | str = "out", runs: Path | str = RUNS,
            progress: Progress | None = None, log: Callable[[str], None] = lambda line: print(line, flush=True)
            ) -> dict[str, Any]:
    """Run (or resume, or find finished) the loop; returns its record (also in ``<loop>/rounds.json``)."""
    if problems := options.problems():
        raise DataflowError(f"dataflow iterate: {'; '.join(problems)}")
    settings = dict(settings or {})
    declared = load_pipeline(file, settings)
    spec = _checked_spec(declared, options)
    config = {**{k: str(v) for k, v in spec.config.items()}, **(train_settings or {})}
    load_config(spec.trainer, None, config)  # an unknown or bad field is an error before any round
    evaluation = _eval_options(spec, declared, eval_settings or {})
    base = settings.get(spec.model_param, str(declared.params[spec.model_param]))
    try:  # the first round's model is trained on: it must be one, before anything is built
        trainable_dir(resolve_model(base, Path(runs))[0])
    except DataflowError as exc:
        raise DataflowError(f"{spec.model_param}={base!r} (the loop's first model): {exc}") from exc
    loop_dir = Path(out) / LOOPS / _loop_id(declared, settings, spec, options, config, evaluation)
    record = _start_record(loop_dir, declared, file, settings, spec, options, config, base)
    runs, progress = Path(runs), progress or Progress(sys.stderr)
    best = {"model": base, "run": None, "spec": base}
    for r in range(1, options.rounds + 1):
        started = time.perf_counter()
        bound = {**settings, spec.model_param: best["spec"]}
        if spec.round_param in declared.params:
            bound[spec.round_param] = str(r)
        log(f"[round {r}] building {declared.name} with {spec.model_param}={best['spec']}")
        round_dir = loop_dir / f"round-{r}"
        try:
            build(load_pipeline(file, bound), round_dir, progress)
        except GateError as exc:
            return _stop(record, loop_dir, f"round {r}: a gate failed, so its data is not used: {exc}", log)
        data = find_output(options.train_on or spec.train, round_dir, allow_empty=True)
        if not data.rows:
            return _stop(record, loop_dir, f"round {r}: the output '{data.name}' has no rows to train on", log)
        require_schema(data, ACCEPTS[spec.trainer], f"round {r}: the {spec.trainer} trainer")
        held_out = find_output(spec.evaluate, loop_dir / "round-1")
        _check_overlap(data, held_out, spec.trainer, loop_dir / f"overlap-{r}", options.allow_overlap, progress)
        if record["base"] is None:
            record["base"] = _evaluated(base, held_out, evaluation, round_dir, runs, progress)
            _write(loop_dir, record)
            log(f"[base] {METRIC} {_score(record['base'])} of {base} on '{held_out.name}' ({held_out.rows} prompts)")
        built = time.perf_counter()
        trained_on = _replayed(record, data, loop_dir / f"replay-{r}", progress) if options.replay and r > 1 else data
        run_dir = train(spec.trainer, str(trained_on.path.parent), best["run"] or base, settings=config, out=round_dir,
                        runs=runs, log=log)
        trained = time.perf_counter()
        result = _evaluated(str(run_dir), held_out, evaluation, round_dir, runs, progress)
        entry = _round_entry(r, best, data, trained_on, run_dir, result, _best_score(record), round_dir,
                             {"build": built - started, "train": trained - built,
                              "evaluate": time.perf_counter() - trained})
        record["rounds"].append(_resumed(entry, record["earlier"].get(r)))
        if entry["kept"]:
            best = {"model": str(run_dir), "run": str(run_dir), "spec": f"hf:{(run_dir / MODEL).resolve()}"}
            record["best"] = {"round": r, "run": run_dir.name, "model": str(run_dir / MODEL), METRIC: entry[METRIC]}
        _write(loop_dir, record)
        log(f"[round {r}] {METRIC} {entry[METRIC]['value']:.3f} ({entry['gain']:+.3f}); "
            f"{'kept' if entry['kept'] else 'not kept: no better than the best so far'}")
        stalled = [e for e in record["rounds"][-options.patience:] if e["gain"] < options.min_gain]
        if len(stalled) == options.patience:
            return _stop(record, loop_dir, f"{options.patience} round(s) in a row gained less than "
                                           f"{options.min_gain}", log)
    return _stop(record, loop_dir, f"ran {options.rounds} round(s)", log)


def _checked_spec(pipeline: Pipeline, options: LoopOptions) -> RoundsSpec:
    """The pipeline's loop declaration, checked against its outputs, parameters and the trainer."""
    spec = pipeline.rounds_spec
    if spec is None:
        raise DataflowError(f"{pipeline.name}: the pipeline declares no rounds; add e.g. p.rounds(train='sft', "
                            f"evaluate='held_out', trainer='sft') to say what each round trains on and is "
                            f"evaluated on")
    found = []
    if spec.trainer not in ACCEPTS:
        found.append(f"trainer {spec.trainer!r} is not one of {', '.join(ACCEPTS)}")
    for what, name in (("train", options.train_on or spec.train), ("evaluate", spec.evaluate)):
        if name not in pipeline.outputs:
            found.append(f"{what}={name!r} is not an output of the pipeline (its outputs: "
                         f"{', '.join(pipeline.outputs) or 'none'})")
    declared = pipeline.outputs.get(options.train_on or spec.train)
    if declared and declared.schema and declared.schema not in ACCEPTS.get(spec.trainer, (declared.schema,)):
        found.append(f"the {spec.trainer} trainer cannot train on output {options.train_on or spec.train!r}: it "
                     f"holds {declared.schema} records (it needs {' or '.join(ACCEPTS[spec.trainer])})")
    if spec.model_param not in pipeline.params:
        found.append(f"model_param={spec.model_param!r} is not a parameter of the pipeline: declare it with "
                     f"p.param({spec.model_param!r}, 'local') and pass it to the model steps")
    known = {f.name for f in fields(CONFIGS.get(spec.trainer, CONFIGS["sft"]))}
    found += [f"config field {name!r} is not a {spec.trainer} config field" for name in spec.config
              if name not in known]
    found += [f"evaluation field {name!r} is not an EvalOptions field" for name in spec.evaluation
              if name not in {f.name for f in fields(EvalOptions)}]
    if found:
        raise DataflowError(f"{pipeline.name}: p.rounds(...): {'; '.join(found)}")
    return spec


def _eval_options(spec: RoundsSpec, pipeline: Pipeline, given: dict[str, str]) -> EvalOptions:
    """The declared evaluation options, with the command line's (``--eval-set NAME=VALUE``) over them."""
    known = {f.name: f for f in fields(EvalOptions)}
    if unknown := sorted(set(given) - set(known)):
        raise DataflowError(f"--eval-set {unknown[0]}: not an evaluation option (they are: {', '.join(known)})")
    values = {"gates": (), **spec.evaluation, **{name: _option_value(text) for name, text in given.items()}}
    options = EvalOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    if problems := options.problems():
        raise DataflowError(f"{pipeline.name}: the rounds' evaluation options: {'; '.join(problems)}")
    return options


def _option_value(text: str) -> Any:
    """A command-line value as JSON where it parses (numbers, lists, null), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _loop_id(pipeline: Pipeline, settings: dict[str, str], spec: RoundsSpec, options: LoopOptions,
             config: dict[str, str], evaluation: EvalOptions) -> str:
    """The loop's folder name: what decides what its rounds do (not how many, nor when to stop)."""
    identity = {"pipeline": pipeline.name, "settings": sorted(settings.items()), "spec": repr(spec),
                "train_on": options.train_on, "replay": options.replay, "config": sorted(config.items()),
                "evaluation": repr(evaluation)}
    return f"{pipeline.name}-{hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:10]}"


def _start_record(loop_dir: Path, pipeline: Pipeline, file: Path | str, settings: dict[str, str], spec: RoundsSpec,
                  options: LoopOptions, config: dict[str, str], base: str) -> dict[str, Any]:
    """The loop record so far (a resumed loop keeps its base evaluation and rounds), started again."""
    path = loop_dir / ROUNDS_RECORD
    earlier = read_record(path) if path.exists() else {}
    return {"loop": loop_dir.name, "path": str(path), "pipeline": pipeline.name, "file": str(file),
            "settings": settings, "base_model": base, "trainer": spec.trainer,
            "train_on": options.train_on or spec.train, "evaluate_on": spec.evaluate, "config": config,
            "options": {f.name: getattr(options, f.name) for f in fields(options)}, "metric": METRIC,
            "started": earlier.get("started", now()), "base": earlier.get("base"), "rounds": [], "best": None,
            "stopped": None, "earlier": {e["round"]: e for e in earlier.get("rounds", [])}}


def _check_overlap(data: BuildOutput, held_out: BuildOutput, trainer: str, directory: Path, allowed: bool,
                   progress: Progress) -> None:
    """Refuse training data that shares text with the held-out prompts (13-word windows, or a whole short
    prompt), unless allowed."""
    directory.mkdir(parents=True, exist_ok=True)
    items = directory / "held_out_prompts.txt"
    items.write_text("".join(text.replace("\n", " ") + "\n" for text in _user_texts(held_out)))
    p = Pipeline("overlap", description=f"'{data.name}' against the held-out prompts of '{held_out.name}'")
    column = COLUMNS[trainer][0]
    rows = p.read_parquet(data.path.resolve(), name="training_data")
    p.output("clean", rows.apply(Decontaminate(columns=(column,), eval_sets=(str(items.resolve()),)),
                                 name="decontaminated"))
    report = build(p, directory, progress)
    found = next(s for s in report.stats if s.name == "decontaminated").rejected
    if not found:
        return
    example = query(directory, "select id, detail from rejects limit 1").row(0, named=True)
    message = (f"{found} of {data.rows} training rows of '{data.name}' share text with the held-out prompts of "
               f"'{held_out.name}' (e.g. row {example['id']}: {example['detail']}); a model trained on them would be "
               f"evaluated on what it saw. Hold those prompts out of the training data")
    if not allowed:
        raise DataflowError(f"{message}, or pass --allow-overlap to train anyway")
    progress.log(f"warning: {message}; training anyway (--allow-overlap)")


def _user_texts(output: BuildOutput) -> list[str]:
    frame = output.frame()
    column = "prompt" if "prompt" in frame.columns else "messages"
    return [turn["content"] for turns in frame[column].to_list() for turn in turns or []
            if turn["role"] == "user" and turn["content"]]


def _evaluated(model: str, held_out: BuildOutput, options: EvalOptions, round_dir: Path, runs: Path,
               progress: Progress) -> dict[str, Any]:
    """The evaluation record's summary: the metric with its interval, and where the record is."""
    found = evaluate(model, str(held_out.path.parent), options, out=round_dir, runs=runs, progress=progress)
    metric = found["metrics"][METRIC]
    return {"model": model, "value": metric["value"], "ci95": metric["ci95"], "record": found["path"]}


def _replayed(record: dict[str, Any], data: BuildOutput, directory: Path, progress: Progress) -> BuildOutput:
    """This round's training rows and every earlier round's, mixed whole (``Mix``; ids stay unique)."""
    p = Pipeline("replay", description=f"round data '{data.name}' with the earlier rounds' data")
    rounds = [(f"round{e['round']}", e["data"]["path"], e["data"]["rows"]) for e in record["rounds"]]
    rounds.append((f"round{len(rounds) + 1}", str(data.path), data.rows))
    mixed = p.mix({name: p.read_parquet(Path(path).resolve(), name=name) for name, path, _ in rounds},
                  counts={name: rows for name, _, rows in rounds}, name="mixed")
    p.output("replayed", mixed, schema=data.schema)
    build(p, directory, progress)
    return find_output("replayed", directory)


def _round_entry(r: int, best: dict[str, Any], data: BuildOutput, trained_on: BuildOutput, run_dir: Path,
                 result: dict[str, Any], best_score: float, round_dir: Path, seconds: dict[str, float]
                 ) -> dict[str, Any]:
    """One round of the record: its data, run, evaluation, gain over the best so far, time and model calls."""
    run = read_run(run_dir)
    generation, other, calls = _build_split(round_dir)
    return {"round": r, "generated_by": best["model"], "build": str(round_dir),
            "data": {"output": data.name, "path": str(data.path), "rows": data.rows},
            "trained_rows": trained_on.rows, "run": run_dir.name, "trained_from": run.get("base_model"),
            METRIC: {"value": result["value"], "ci95": result["ci95"]}, "eval_record": result["record"],
            "gain": result["value"] - best_score, "kept": result["value"] > best_score,
            "seconds": {"generation": round(generation, 1), "verification": round(other, 1),
                        "training": run.get("seconds"), "evaluation": round(seconds["evaluate"], 1),
                        "round": round(sum(seconds.values()), 1)},
            "model_calls": calls["llm_calls"], "cache_hits": calls["cache_hits"], "finished": now()}


def _resumed(entry: dict[str, Any], earlier: dict[str, Any] | None) -> dict[str, Any]:
    """A round found finished in the caches keeps the time and model calls of the run that did it, and
    says what this run cost (``resumed``)."""
    if earlier is None or earlier["run"] != entry["run"]:
        return entry
    return {**entry, "seconds": earlier["seconds"], "model_calls": earlier["model_calls"],
            "cache_hits": earlier["cache_hits"], "resumed": {"seconds": entry["seconds"]["round"],
                                                             "model_calls": entry["model_calls"]}}


def _build_split(round_dir: Path) -> tuple[float, float, dict[str, int]]:
    """Seconds of the round build's model steps and of its other steps in the last build, and the model
    calls it made and found in the request cache."""
    nodes = [n for n in read_manifest(round_dir)["nodes"].values() if n["status"] == "built"]
    model_steps = [n for n in nodes if {"llm_calls", "cache_hits"} & set(n.get("metrics") or {})]
    generation = sum(n["seconds"] or 0 for n in model_steps)
    other = sum(n["seconds"] or 0 for n in nodes) - generation
    calls = {key: sum(int(n["metrics"].get(key, 0)) for n in model_steps) for key in ("llm_calls", "cache_hits")}
    return generation, other, calls


def _best_score(record: dict[str, Any]) -> float:
    kept = [e[METRIC]["value"] for e in record["rounds"] if e["kept"]]
    return max([record["base"]["value"], *kept])


def _score(evaluation: dict[str, Any]) -> str:
    low, high = evaluation["ci95"]
    return f"{evaluation['value']:.3f} [{low:.3f}, {high:.3f}]"


def _stop(record: dict[str, Any], loop_dir: Path, reason: str, log: Callable[[str], None]) -> dict[str, Any]:
    kept = [e for e in record["rounds"] if e["kept"]]
    if kept and record["best"] is None:
        last = kept[-1]
        record["best"] = {"round": last["round"], "run": last["run"], METRIC: last[METRIC]}
    record.update(stopped=reason, finished=now(), earlier={})  # the record says what this run found
    _write(loop_dir, record)
    del record["earlier"]
    log(f"stopped: {reason}; best model: {record['best']['run'] if record['best'] else record['base_model']}")
    return record


def _write(loop_dir: Path, record: dict[str, Any]) -> None:
    """The record as it stands; rounds recorded earlier and not yet found again in this run stay in it."""
    done = {e["round"] for e in record["rounds"]}
    rounds = record["rounds"] + [e for r, e in sorted(record["earlier"].items()) if r not in done]
    written = {**{k: v for k, v in record.items() if k != "earlier"}, "rounds": rounds}
    write_record(loop_dir / ROUNDS_RECORD, written)


def render(record: dict[str, Any]) -> str:
    """The loop as a table: per round the data, the score with its interval, the gain, and where time went."""
    lines = [f"{'round':<6}{'model':<24}{'rows':>6}{METRIC:>8}  {'95% CI':<16}{'gain':>7}  {'kept':<5}"
             f"{'gen s':>7}{'check s':>8}{'train s':>8}{'eval s':>7}{'calls':>7}"]
    if base := record["base"]:
        low, high = base["ci95"]
        lines.append(f"{0:<6}{base['model'][:23]:<24}{'':>6}{base['value']:>8.3f}  [{low:.3f}, {high:.3f}]  ")
    for e in record["rounds"]:
        low, high = e[METRIC]["ci95"]
        s = e["seconds"]
        lines.append(f"{e['round']:<6}{e['run'][:23]:<24}{e['trained_rows']:>6}{e[METRIC]['value']:>8.3f}  "
                     f"[{low:.3f}, {high:.3f}]{e['gain']:>+7.3f}  {'yes' if e['kept'] else 'no':<5}"
                     f"{s['generation']:>7.0f}{s['verification']:>8.0f}{s['training'] or 0:>8.0f}"
                     f"{s['evaluation']:>7.0f}{e['model_calls']:>7}")
    best = record["best"]
    chosen = f"round {best['round']}, run {best['run']}" if best else "the base model (no round improved)"
    lines.append(f"best: {chosen}; stopped: {record['stopped']}; record: {record['path']}")
    return "\n".join(lines)
