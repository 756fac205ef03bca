"""Evaluation of a model or a training run on a build output (``dataflow eval MODEL --on NAME``):
pass@1 / pass@k with the verifiers, win rate against a baseline with the pairwise judge, KL to a
reference, format correctness and distinct-2, checked against seed 001's exit gates."""

from dataflow.trainers.evaluation.command import add_arguments, render, run
from dataflow.trainers.evaluation.evaluate import evaluate
from dataflow.trainers.evaluation.options import EvalOptions

__all__ = ["EvalOptions", "add_arguments", "evaluate", "render", "run"]
