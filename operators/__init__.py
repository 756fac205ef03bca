"""Built-in operators, in families (one folder each; see ARCHITECTURE.md). Most core ones are also
Node methods (``node.filter(...)`` etc.). A family is imported when one of its names is first used,
so a build loads only the families its pipeline uses (a pipeline that reads and filters starts
without the LLM layer)."""

from importlib import import_module

FAMILIES = {  # family -> the names it exports (its __all__; tests/test_architecture.py checks they agree)
    "core": ("BatchFunction", "Cast", "Concat", "Drop", "ExactDedup", "Filter", "FromRows", "GlobalFunction", "Join",
             "Limit", "Mix", "ReadCsv", "ReadHF", "ReadJson", "ReadJsonl", "ReadParquet", "Rename", "RowFilter",
             "RowFunction", "Sample", "Select", "SplitPart", "Validate", "WithColumns"),
    "curation": ("CharacterMeasures", "Decontaminate", "DiversityMetrics", "EchoMeasures", "FastTextQuality",
                 "FastTextTrain", "LanguageId", "LengthMeasures", "MinHashDedup", "NoveltyFilter", "RefusalMeasures",
                 "RepetitionMeasures", "SemanticDedup", "StopWordMeasures"),
    "formats": ("ConversationPrompt", "ToConversation", "ToPreference", "ToPrompt"),
    "generation": ("PRINCIPLES", "Ask", "BestOfK", "ConstitutionalRevision", "EvolInstruct", "Generate",
                   "LLMOperator", "Magpie", "MultiTurnDialogue", "Reply", "SelfInstruct", "StructuredGenerate",
                   "TopicTemplate"),
    "judging": ("JudgeScore", "PairwiseJudge"),
    "rewards": ("CodeVerify", "FunctionReward", "JsonSchemaVerify", "MatchVerify", "MathVerify"),
    "selection": ("BalancedSample", "Curriculum", "PassRate", "PreferencePairs", "PyramidSample", "SelectBest",
                  "VerdictPairs", "learnable_band"),
}
FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}
__all__ = sorted(FAMILY_OF)


def __getattr__(name: str):
    """An operator (or helper) by name, its family imported on first use."""
    if name not in FAMILY_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{FAMILY_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
