"""Built-in operators. Most are also reachable as Node methods (``node.filter(...)`` etc.)."""

from dataflow.operators.basic import Cast, Drop, Filter, Limit, Rename, Select, WithColumns
from dataflow.operators.combine import Concat, Join
from dataflow.operators.dedup import ExactDedup
from dataflow.operators.formats import ToConversation, ToPreference, ToPrompt, Validate
from dataflow.operators.functions import BatchFunction, GlobalFunction, RowFilter, RowFunction
from dataflow.operators.sampling import Sample, SplitPart

__all__ = ["BatchFunction", "Cast", "Concat", "Drop", "ExactDedup", "Filter", "GlobalFunction", "Join", "Limit",
           "Rename", "RowFilter", "RowFunction", "Sample", "Select", "SplitPart", "ToConversation",
           "ToPreference", "ToPrompt", "Validate", "WithColumns"]
