"""The selection family: best of K, quality-pyramid and balanced sampling, preference pairs, GRPO
pass rates and curriculum order."""

from dataflow.operators.selection.best import SelectBest
from dataflow.operators.selection.curriculum import Curriculum
from dataflow.operators.selection.grpo import PassRate, learnable_band
from dataflow.operators.selection.pairs import PreferencePairs, VerdictPairs
from dataflow.operators.selection.pyramid import BalancedSample, PyramidSample

__all__ = ["BalancedSample", "Curriculum", "PassRate", "PreferencePairs", "PyramidSample", "SelectBest",
           "VerdictPairs", "learnable_band"]
