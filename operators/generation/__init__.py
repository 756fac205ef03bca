"""The generation family: the LLM operator base (``base``, which judging and synthesis build on),
prompt templates, Generate, BestOfK and StructuredGenerate, and the synthesis operators:
TopicTemplate, SelfInstruct, EvolInstruct, Magpie, MultiTurnDialogue, ConstitutionalRevision."""

from dataflow.operators.generation.base import Ask, LLMOperator, Reply
from dataflow.operators.generation.constitution import PRINCIPLES, ConstitutionalRevision
from dataflow.operators.generation.dialogue import MultiTurnDialogue
from dataflow.operators.generation.evol import EvolInstruct
from dataflow.operators.generation.generate import BestOfK, Generate, StructuredGenerate
from dataflow.operators.generation.magpie import Magpie
from dataflow.operators.generation.self_instruct import SelfInstruct
from dataflow.operators.generation.topics import TopicTemplate

__all__ = ["PRINCIPLES", "Ask", "BestOfK", "ConstitutionalRevision", "EvolInstruct", "Generate", "LLMOperator",
           "Magpie", "MultiTurnDialogue", "Reply", "SelfInstruct", "StructuredGenerate", "TopicTemplate"]
