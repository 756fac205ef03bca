"""The ``dataflow`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dataflow.errors import DataflowError, GateError

DESCRIPTION = """\
dataflow builds post-training datasets from a pipeline file (a DAG of operators).

commands:
  build PIPELINE.py   build the pipeline; only nodes whose inputs, code or parameters
                      changed are rebuilt. --dry-run shows the plan and why; --help-params
                      lists the pipeline's parameters.
  query "SQL"         SQL (DuckDB) over the last build: every node and output is a view
                      named after it, plus `rejects` (dropped rows with reasons), `runs`
                      (build history), `nodes` (per-node stats, metrics as a struct), `edges` (the DAG),
                      `gates` (gate results) and `rounds` (the rounds of `dataflow iterate` loops).
  show NAME           the first rows and the schema of a node or output.
  report              the last build's summary; --format html rewrites OUT/report.html (written
                      after every build): charts, rejects with sample rows, what changed.
  nodes               the last build's DAG as a table: name, operator, inputs, status, rows.
  iterate PIPELINE.py rounds of build -> train -> evaluate (as the pipeline's p.rounds(...) says): each
                      round's data made by the best model so far, a model kept only if it scored
                      higher; resumable; a `rounds` view for dataflow query.
  clean               delete cached node results that no build references.
  train sft|dpo|grpo DATA
                      train a model on a build output with TRL into runs/<run id>/ (resumable;
                      a finished run with the same inputs is not trained again).
  export NAME --format FORMAT --to DIR
                      an output as the files a trainer reads as they are: llamafactory, verl, trl,
                      openai, sharegpt, alpaca, chatml.
  eval MODEL --on NAME
                      pass@1/pass@k with the verifiers, win rate against a baseline (pairwise judge,
                      both orders), KL to a reference, distinct-2; a table and a JSON record in
                      runs/<run id>/eval/; exit 1 when an exit gate fails.

exit status: 0 on success, 1 on an error or a failed gate (explained in one paragraph), 130 when
interrupted.
"""


def _settings(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        if "=" not in pair:
            raise DataflowError(f"--set {pair}: expected name=value")
        key, value = pair.split("=", 1)
        values[key.strip()] = value
    return values


def cmd_build(args: argparse.Namespace) -> int:
    from dataflow.build import build, load_pipeline, plan
    from dataflow.executors import executor_class
    from dataflow.progress import make_progress
    from dataflow.records import read_manifest
    from dataflow.reports import report as render

    if args.address:
        if args.executor != "ray":
            raise DataflowError("--address is the Ray cluster's: give it with --executor ray")
        os.environ["RAY_ADDRESS"] = args.address  # what Ray itself reads
    pipeline = load_pipeline(args.pipeline, _settings(args.set))
    if args.help_params:
        print_params(pipeline)
        return 0
    if args.dry_run:
        executor_class(args.executor)  # an unknown name is an error here too
        print_params(pipeline)
        compiled, plans = plan(pipeline, args.out, tuple(args.rebuild))
        for name in compiled.order:
            p = plans[name]
            print(f"{name:<24} {'cached' if p.cached else 'build'}  {p.reason}".rstrip())
        to_build = sum(not p.cached for p in plans.values())
        print(f"{to_build} of {len(plans)} node(s) to build")
        return 0
    progress, failed_gate = make_progress(), None
    try:
        report = build(pipeline, args.out, progress, tuple(args.rebuild), executor=args.executor)
    except GateError as exc:  # the build recorded what it did: show that, then the failed conditions
        failed_gate = exc
    finally:
        progress.close()
    render("summary")(read_manifest(args.out))
    if failed_gate:
        raise failed_gate
    if report.nothing_done:
        print(f"nothing to do: all {len(report.stats)} nodes are cached and the outputs are up to date")
    else:
        built = sum(s.status != "cached" for s in report.stats)
        print(f"built {built} of {len(report.stats)} node(s) in {report.seconds:.2f}s; outputs in {args.out}/")
    return 0


def print_params(pipeline) -> None:
    """The pipeline's parameters: value, default when overridden, and help."""
    if not pipeline.declared_params:
        print("parameters: none")
        return
    print("parameters (override with --set NAME=VALUE):")
    for name, param in pipeline.declared_params.items():
        changed = f" (default {param.default!r})" if param.value != param.default else ""
        print(f"  {name} = {param.value!r}{changed}{'  ' + param.help if param.help else ''}")


def cmd_report(args: argparse.Namespace) -> int:
    from dataflow.records import read_manifest, read_runs
    from dataflow.reports import report

    if args.format == "html":
        import polars as pl

        from dataflow.reports.html import write

        try:
            written = write(args.out)
        except pl.exceptions.PolarsError as exc:
            raise DataflowError(f"the report cannot be made from the build in {args.out}/ "
                                f"({str(exc).splitlines()[0]}); if a file of the build was changed or cut short, "
                                f"build the pipeline again, which writes its outputs again") from exc
        print(f"wrote {written} (one file: open it in a browser, no network needed)")
        return 0
    manifest = read_manifest(args.out)
    report(args.format)(manifest)
    last = (read_runs(args.out) or [{}])[-1]
    if last.get("status") not in (None, "ok") and last.get("run_id") != manifest.get("run_id"):
        print(f"note: this is the last build that finished; the build after it (run {last.get('run_id')}, started "
              f"{last.get('started')}) ended with status '{last.get('status')}': the {args.out}/report.html it "
              f"wrote shows what it did (`dataflow report --format html` writes it again)")
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from dataflow.catalog import nodes_table

    print_frame(nodes_table(args.out), args.format)
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dataflow")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def cmd_query(args: argparse.Namespace) -> int:
    from dataflow.catalog import case_notes, query

    frame = query(args.out, args.sql)
    for note in case_notes(args.out, lambda name: name.lower() in args.sql.lower()):
        print(note, file=sys.stderr)
    print_frame(frame, args.format)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from dataflow.catalog import case_notes, connect

    if args.limit < 0:
        raise DataflowError(f"--limit {args.limit}: give how many rows to show, 0 or more")
    con = connect(args.out)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    if args.name not in views:
        from dataflow.records import read_manifest

        manifest = read_manifest(args.out)
        if args.name in manifest["nodes"] or args.name in manifest["outputs"]:
            raise DataflowError(f"'{args.name}' was not built in the last build: a failed gate held it back (see "
                                f"`dataflow query \"select * from gates where not passed\"`)")
        raise DataflowError(f"no node or output named '{args.name}'; there are: {', '.join(sorted(views))}")
    total = con.sql(f'SELECT count(*) FROM "{args.name}"').fetchall()[0][0]
    frame = con.sql(f'SELECT * FROM "{args.name}" LIMIT {int(args.limit)}').pl()
    for note in case_notes(args.out, lambda name: name == args.name):
        print(note, file=sys.stderr)
    print(f"{args.name}: {total:,} rows; columns: " + ", ".join(f"{c} ({t})" for c, t in frame.schema.items()))
    print_frame(frame, args.format)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dataflow.trainers.train import train

    directory = train(args.trainer, args.data, args.model, args.config, _settings(args.set), args.out, args.runs)
    print(f"next: dataflow eval {directory} --on HELD_OUT_OUTPUT --out {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dataflow.trainers.evaluation import run

    return run(args)


def cmd_iterate(args: argparse.Namespace) -> int:
    from dataflow.progress import make_progress
    from dataflow.trainers.rounds import LoopOptions, iterate, render

    options = LoopOptions(args.rounds, args.patience, args.min_gain, args.train_on, args.replay, args.allow_overlap)
    progress = make_progress()
    try:
        record = iterate(args.pipeline, options, _settings(args.set), _settings(args.train_set),
                         _settings(args.eval_set), args.out, args.runs, progress)
    finally:
        progress.close()
    print(render(record))
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from dataflow.records import referenced_fingerprints
    from dataflow.store import Store

    store = Store(args.out)
    if not store.root.is_dir():
        raise DataflowError(f"no build found in {args.out}/ (no .dataflow/ folder): nothing to clean; give the "
                            f"build folder with --out")
    keep = referenced_fingerprints(store)
    store.lock()
    try:
        removed, freed = store.clean(keep)
    finally:
        store.unlock()
    print(f"removed {removed} unreferenced cache entr{'y' if removed == 1 else 'ies'} ({freed / 1e6:.1f} MB)")
    return 0


def print_frame(frame, fmt: str) -> None:
    import polars as pl

    if fmt == "csv":
        nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
        if nested:
            raise DataflowError(f"CSV cannot hold nested columns ({', '.join(nested)}): use --format json, or "
                                f"select flat columns")
        sys.stdout.write(frame.write_csv())
    elif fmt == "json":
        sys.stdout.write(frame.write_json() + "\n")
    else:
        with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=160,
                       tbl_hide_dataframe_shape=True):
            print(frame)


def out_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("out"), help="build directory (default: out)")


def runs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=Path, default=Path("runs"), help="training runs directory (default: runs)")


def train_arguments(train: argparse.ArgumentParser) -> None:
    """The trainers of `dataflow train` and their options."""
    from dataflow.trainers.config import CONFIGS, field_help

    trainers = train.add_subparsers(dest="trainer", required=True, metavar="TRAINER")
    for name, what in (("sft", "conversations (an sft output)"), ("dpo", "preference pairs (a preference output)"),
                       ("grpo", "a prompt set with gold answers (a prompt output)")):
        k = trainers.add_parser(name, help=f"{name.upper()} on {what}", epilog=field_help(CONFIGS[name]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        k.add_argument("data", metavar="DATA", help="an output name of the last build in --out, or an OUT/NAME folder")
        k.add_argument("--model", default="local", help="the base model: local (the default), hf:PATH, or a run (its "
                                                        "id, an id prefix or `last`: continue from its model)")
        k.add_argument("--config", type=Path, help="a YAML file of config fields (listed below)")
        k.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="set a config field (repeatable; wins over --config)")
        out_option(k)
        runs_option(k)
        k.set_defaults(run=cmd_train)


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line. The options of train, export and eval, which import the trainers (and DuckDB), are
    added only when ``command`` is one of them or None: `dataflow build` starts without them."""
    main = argparse.ArgumentParser(prog="dataflow", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    main.add_argument("--version", action="version", version=f"dataflow {_version()}")
    sub = main.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rows_format = "how to print the rows: table (the default), csv or json"

    b = sub.add_parser("build", help="build a pipeline file")
    b.add_argument("pipeline", help="path of the pipeline .py file")
    out_option(b)
    b.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a pipeline parameter (repeatable)")
    b.add_argument("--dry-run", action="store_true", help="print each node as cached or to build, and why")
    b.add_argument("--rebuild", action="append", default=[], metavar="NODE",
                   help="rebuild NODE and everything downstream even if cached (repeatable)")
    b.add_argument("--executor", default="local", help="what runs the nodes: local (the default, in this process) or "
                                                       "ray (a Ray cluster; extra `ray`)")
    b.add_argument("--address", help="with --executor ray: the cluster, auto or HOST:PORT (default: $RAY_ADDRESS, "
                                      "else a local cluster with a worker per core)")
    b.add_argument("--help-params", action="store_true", help="list the pipeline's parameters and exit")
    b.set_defaults(run=cmd_build)

    q = sub.add_parser("query", help="run SQL over the last build")
    q.add_argument("sql", metavar="SQL", help="a DuckDB query over the last build: each node and output by its name, "
                                              "rejects, runs, nodes, edges, gates")
    out_option(q)
    q.add_argument("--format", choices=("table", "csv", "json"), default="table", help=rows_format)
    q.set_defaults(run=cmd_query)

    s = sub.add_parser("show", help="show a node or output")
    s.add_argument("name", metavar="NAME", help="a node or output of the last build")
    out_option(s)
    s.add_argument("--limit", type=int, default=10, help="how many rows to show (default: 10)")
    s.add_argument("--format", choices=("table", "csv", "json"), default="table", help=rows_format)
    s.set_defaults(run=cmd_show)

    r = sub.add_parser("report", help="the last build's report: the summary, or one offline HTML file")
    out_option(r)
    r.add_argument("--format", default="summary", help="summary (printed; the default) or html (writes "
                                                       "OUT/report.html, as every build does)")
    r.set_defaults(run=cmd_report)

    n = sub.add_parser("nodes", help="the last build's DAG as a table: name, operator, inputs, status, rows")
    out_option(n)
    n.add_argument("--format", choices=("table", "csv", "json"), default="table", help=rows_format)
    n.set_defaults(run=cmd_nodes)

    c = sub.add_parser("clean", help="delete cache entries no build references")
    out_option(c)
    c.set_defaults(run=cmd_clean)

    t = sub.add_parser("train", help="train a model on a build output (SFT, DPO, GRPO on TRL)")
    if command in (None, "train"):
        train_arguments(t)

    x = sub.add_parser("export", help="write a build output as the files a trainer reads (LLaMA-Factory, verl, "
                                      "TRL, OpenAI, ...)")
    if command in (None, "export"):
        from dataflow.trainers import exports

        exports.add_arguments(x)
        x.set_defaults(run=exports.run)
    out_option(x)

    i = sub.add_parser("iterate", help="rounds of build -> train -> evaluate, as the pipeline's p.rounds(...) says")
    i.add_argument("pipeline", metavar="PIPELINE.py", help="a pipeline file that declares p.rounds(...)")
    i.add_argument("--rounds", type=int, default=3, help="the most rounds (default 3)")
    i.add_argument("--patience", type=int, default=2, help="stop after this many rounds in a row that gained less "
                                                          "than --min-gain (default 2)")
    i.add_argument("--min-gain", type=float, default=0.01, help="a round that gains less counts as stalled "
                                                                "(in the metric's units; default 0.01)")
    i.add_argument("--train-on", metavar="OUTPUT", help="train on this output instead of the declared one "
                                                        "(e.g. a control)")
    i.add_argument("--replay", action="store_true", help="train each round on its data plus every earlier round's")
    i.add_argument("--allow-overlap", action="store_true", help="train even if the training data shares text with "
                                                                "the held-out set")
    i.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a pipeline parameter "
                                                                                   "(repeatable)")
    i.add_argument("--train-set", action="append", default=[], metavar="NAME=VALUE",
                   help="a trainer config field (repeatable; wins over the pipeline's)")
    i.add_argument("--eval-set", action="append", default=[], metavar="NAME=VALUE",
                   help="an evaluation option, e.g. prompts=50 or samples=8 (repeatable; wins over the pipeline's)")
    out_option(i)
    runs_option(i)
    i.set_defaults(run=cmd_iterate)

    e = sub.add_parser("eval", help="evaluate a model or a training run on a build output")
    if command in (None, "eval"):
        from dataflow.trainers.evaluation import add_arguments as eval_arguments

        eval_arguments(e)
    out_option(e)
    runs_option(e)
    e.set_defaults(run=cmd_eval)
    return main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(next((a for a in argv if not a.startswith("-")), None)).parse_args(argv)
    try:
        return args.run(args)
    except DataflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the machine refused (a full disk, a file that vanished): say where, not how
        print(f"error: {exc.filename or 'writing the build'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished nodes are kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
