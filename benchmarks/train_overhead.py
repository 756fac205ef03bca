"""What `dataflow train sft` costs over the same TRL script written by hand (issue 14): SFT training
tokens/s on the packaged model, each contender in its own process, interleaved in one run.

    python benchmarks/train_overhead.py [--runs 3] [--steps 10]

Both train the quickstart's `train` output (built first) with the same TRL SFTConfig (batch 4,
max_length 256, assistant-only loss with the same marked chat template, CPU) and save the model. The
hand-written script is TRL's documented usage and nothing else; dataflow adds its checks, the run
record, the loss log and the content hash of the base model (with --steps below save_steps, 25, neither
writes a checkpoint). Target: overhead <= 1.05x.
Tokens are TRL's own count (`num_tokens`); a rate is tokens / wall time of the whole process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import load, run_facts, settle, write_section  # noqa: E402

REPO = HERE.parent
HAND_WRITTEN = '''
import sys, datasets, trl
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, data, template, out, steps = sys.argv[1:6]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
tokenizer.chat_template = open(template).read()
dataset = datasets.load_dataset("parquet", data_files=data, split="train").select_columns(["messages"])
args = trl.SFTConfig(output_dir=out, max_steps=int(steps), per_device_train_batch_size=4, max_length=256,
                     learning_rate=5e-5, assistant_only_loss=True, use_cpu=True, bf16=False, report_to="none",
                     save_strategy="no", logging_steps=1, seed=0, data_seed=0, disable_tqdm=True)
trainer = trl.SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32"), args=args,
                         train_dataset=dataset, processing_class=tokenizer)
trainer.train()
trainer.save_model(out + "/model")
print("TOKENS", int(trainer.state.log_history[-2]["num_tokens"]))
'''


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{command[:4]} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from dataflow.llm.convert import ensure_default_model
    from dataflow.trainers.templates import training_template

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    out = work / "out"
    python = sys.executable
    timed([python, "-m", "dataflow.cli", "build", "pipelines/quickstart.py", "--out", str(out)])
    model_dir = ensure_default_model()
    template = work / "template.jinja"
    template.write_text(training_template(AutoTokenizer.from_pretrained(model_dir), "local"))
    script = work / "hand_written.py"
    script.write_text(HAND_WRITTEN)

    def dataflow_run(i: int) -> tuple[float, int]:
        runs = work / f"runs{i}"
        seconds, _ = timed([python, "-m", "dataflow.cli", "train", "sft", "train", "--out", str(out), "--runs",
                            str(runs), "--set", f"max_steps={args.steps}", "--set", "max_length=256"])
        [folder] = runs.iterdir()
        log = [json.loads(line) for line in (folder / "loss.jsonl").read_text().splitlines()]
        return seconds, int(log[-1]["num_tokens"])

    def trl_run(i: int) -> tuple[float, int]:
        seconds, stdout = timed([python, str(script), str(model_dir), str(out / "train" / "data.parquet"),
                                 str(template), str(work / f"trl{i}"), str(args.steps)])
        return seconds, int(stdout.split("TOKENS")[-1])

    contenders = {"dataflow train sft": dataflow_run, "TRL script by hand": trl_run}
    settle()
    before = load()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    tokens: dict[str, int] = {}
    for i in range(args.runs):
        for name, run in contenders.items():
            seconds, count = run(i)
            rates[name].append(count / seconds)
            tokens[name] = count
    after = load()
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = median["TRL script by hand"] / median["dataflow train sft"]
    rows = [f"| {name} | {tokens[name]:,} | {median[name]:.1f} | {', '.join(f'{r:.1f}' for r in rates[name])} |"
            for name in contenders]
    body = "\n".join([
        *run_facts(), f"- load average before: {before}; after: {after}",
        f"- {args.steps} SFT steps (batch 4, max_length 256, assistant-only loss) on the quickstart's `train` "
        f"output, {args.runs} interleaved runs each, whole processes (model load, tokenizing, training, saving)", "",
        "| contender | tokens trained | median tokens/s | runs |", "| --- | --- | --- | --- |", *rows, "",
        f"Overhead of `dataflow train`: **{ratio:.3f}x** the hand-written script's time per token "
        f"(target <= 1.05x: {'met' if ratio <= 1.05 else 'MISSED'}).",
    ])
    write_section("train-overhead", "Training hand-off: `dataflow train sft` vs a TRL script by hand", body)


if __name__ == "__main__":
    main()
