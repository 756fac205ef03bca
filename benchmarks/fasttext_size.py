"""fastText model size against accuracy (issue 20). Run: python benchmarks/fasttext_size.py

Task: tell Debian packages whose English description mentions "documentation" from the others, by the
rest of their text; 20,000 descriptions train, 10,000 others test. Each setting trains the way
FastTextTrain does (one thread, seed 0, in a fresh process). Results go to benchmarks/RESULTS.md
(section ``fasttext``).
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from minhash_corpus import load_corpus  # noqa: E402
from results import load, run_facts, write_section  # noqa: E402

from dataflow.operators.curation.quality import fasttext_line, positive_probability, train_classifier  # noqa: E402

SETTINGS = [  # (bucket, dim, quantized)
    (2_000_000, 64, False), (200_000, 64, False), (100_000, 64, False), (2_000_000, 64, True), (100_000, 64, True)]
QUANTIZE = """import sys, fasttext
model = fasttext.load_model(sys.argv[1]); model.quantize(input=sys.argv[2], retrain=False, qnorm=True)
model.save_model(sys.argv[1])
"""


def main() -> None:
    import subprocess

    import fasttext

    load_before = load()
    rng = random.Random(0)
    rows = [(d.lower().replace("documentation", ""), "documentation" in d.lower()) for d in load_corpus("en")]
    rng.shuffle(rows)
    train, test = rows[:20_000], rows[20_000:30_000]
    table = ["| bucket | dim | quantized | accuracy | model size | training time |", "| --- | --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as work:
        for bucket, dim, quantized in SETTINGS:
            path = Path(work) / "model.bin"
            started = time.perf_counter()
            train_classifier([t for t, _ in train], [y for _, y in train], path, "benchmark", epoch=25, wordNgrams=2,
                             lr=0.5, dim=dim, bucket=bucket, seed=0)
            if quantized:
                data = Path(work) / "train.txt"
                data.write_text("".join(f"__label__{'positive' if y else 'negative'} {fasttext_line(t)}\n"
                                        for t, y in train))
                subprocess.run([sys.executable, "-c", QUANTIZE, str(path), str(data)], check=True)
            seconds = time.perf_counter() - started
            model = fasttext.load_model(str(path))
            probabilities = positive_probability(model, [t for t, _ in test])
            accuracy = sum((p >= 0.5) == y for p, (_, y) in zip(probabilities, test)) / len(test)
            table.append(f"| {bucket:,} | {dim} | {'yes' if quantized else 'no'} | {accuracy:.4f} | "
                         f"{path.stat().st_size / 1e6:.1f} MB | {seconds:.1f} s |")
    lines = run_facts() + [f"- load average before: {load_before}, after: {load()}", "", *table, "",
                           "FastTextTrain's default is 100,000 buckets at dim 64. Quantization (product "
                           "quantization without retraining) makes the model ~100x smaller, but costs several "
                           "times the training time and, with fewer buckets, accuracy."]
    write_section("fasttext", "fastText model size and accuracy (issue 20)", "\n".join(lines))


if __name__ == "__main__":
    main()
