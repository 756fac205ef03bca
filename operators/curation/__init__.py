"""The curation family: near-duplicate removal, decontamination, heuristic measures, language id,
fastText quality, ROUGE-L novelty and diversity metrics."""

from dataflow.operators.curation.decontaminate import Decontaminate
from dataflow.operators.curation.diversity import DiversityMetrics
from dataflow.operators.curation.heuristics import (CharacterMeasures, EchoMeasures, LengthMeasures,
                                                    RefusalMeasures, RepetitionMeasures, StopWordMeasures)
from dataflow.operators.curation.language import LanguageId
from dataflow.operators.curation.minhash import MinHashDedup
from dataflow.operators.curation.novelty import NoveltyFilter
from dataflow.operators.curation.quality import FastTextQuality, FastTextTrain
from dataflow.operators.curation.semantic import SemanticDedup

__all__ = ["CharacterMeasures", "Decontaminate", "DiversityMetrics", "EchoMeasures", "FastTextQuality",
           "FastTextTrain", "LanguageId", "LengthMeasures", "MinHashDedup", "NoveltyFilter", "RefusalMeasures",
           "RepetitionMeasures", "SemanticDedup", "StopWordMeasures"]
