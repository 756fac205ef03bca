"""The judging family: LLM-as-judge scores and pairwise verdicts on the LLM operator base."""

from dataflow.operators.judging.pairwise import PairwiseJudge
from dataflow.operators.judging.score import JudgeScore

__all__ = ["JudgeScore", "PairwiseJudge"]
