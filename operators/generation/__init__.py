"""The generation family: the LLM operator base (``base``, which judging and synthesis build on),
prompt templates, and Generate, BestOfK and StructuredGenerate."""

from dataflow.operators.generation.base import Ask, LLMOperator, Reply
from dataflow.operators.generation.generate import BestOfK, Generate, StructuredGenerate

__all__ = ["Ask", "BestOfK", "Generate", "LLMOperator", "Reply", "StructuredGenerate"]
