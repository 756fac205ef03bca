"""Built-in operators. Most basic ones are also Node methods (``node.filter(...)`` etc.)."""

from dataflow.operators.basic import Cast, Drop, Filter, Limit, Rename, Select, WithColumns
from dataflow.operators.combine import Concat, Join
from dataflow.operators.decontaminate import Decontaminate
from dataflow.operators.dedup import ExactDedup
from dataflow.operators.diversity import DiversityMetrics
from dataflow.operators.formats import ToConversation, ToPreference, ToPrompt, Validate
from dataflow.operators.functions import BatchFunction, GlobalFunction, RowFilter, RowFunction
from dataflow.operators.generate import BestOfK, Generate, StructuredGenerate
from dataflow.operators.grpo import PassRate, learnable_band
from dataflow.operators.heuristics import (CharacterMeasures, LengthMeasures, RefusalMeasures, RepetitionMeasures,
                                           StopWordMeasures)
from dataflow.operators.judge import JudgeScore, PairwiseJudge
from dataflow.operators.language import LanguageId
from dataflow.operators.minhash import MinHashDedup
from dataflow.operators.pairs import PreferencePairs, VerdictPairs
from dataflow.operators.quality import FastTextQuality
from dataflow.operators.sampling import Sample, SplitPart
from dataflow.operators.select import BalancedSample, PyramidSample, SelectBest
from dataflow.operators.semantic import SemanticDedup
from dataflow.operators.verify import CodeVerify, FunctionReward, JsonSchemaVerify, MathVerify, MatchVerify

__all__ = [
    "BalancedSample", "BatchFunction", "BestOfK", "Cast", "CharacterMeasures", "CodeVerify", "Concat", "Decontaminate",
    "DiversityMetrics", "Drop", "ExactDedup", "FastTextQuality", "Filter", "FunctionReward", "Generate",
    "GlobalFunction", "Join", "JsonSchemaVerify", "JudgeScore", "LanguageId", "LengthMeasures", "Limit", "MatchVerify",
    "MathVerify", "MinHashDedup", "PairwiseJudge", "PassRate", "PreferencePairs", "PyramidSample", "RefusalMeasures",
    "Rename", "RepetitionMeasures", "RowFilter", "RowFunction", "Sample", "Select", "SelectBest", "SemanticDedup",
    "SplitPart", "StopWordMeasures", "StructuredGenerate", "ToConversation", "ToPreference", "ToPrompt", "Validate",
    "VerdictPairs", "WithColumns", "learnable_band",
]
