"""The rewards family: verifiers that write a reward and its reason (math answers, programs in the
sandbox, string and JSON matches, user functions)."""

from dataflow.operators.rewards.match import FunctionReward, JsonSchemaVerify, MatchVerify
from dataflow.operators.rewards.math_answers import MathVerify
from dataflow.operators.rewards.programs import CodeVerify

__all__ = ["CodeVerify", "FunctionReward", "JsonSchemaVerify", "MatchVerify", "MathVerify"]
