"""The core family: what ``Node`` exposes (sources, basic verbs, user functions, combine, mixing, sampling,
exact dedup, validation). The only family the engine imports."""

from dataflow.operators.core.basic import Cast, Drop, Filter, Limit, Rename, Select, WithColumns
from dataflow.operators.core.combine import Concat, Join
from dataflow.operators.core.dedup import ExactDedup
from dataflow.operators.core.functions import BatchFunction, GlobalFunction, RowFilter, RowFunction
from dataflow.operators.core.mix import Mix
from dataflow.operators.core.sampling import Sample, SplitPart
from dataflow.operators.core.sources import FromRows, ReadCsv, ReadHF, ReadJson, ReadJsonl, ReadParquet
from dataflow.operators.core.validate import Validate

__all__ = ["BatchFunction", "Cast", "Concat", "Drop", "ExactDedup", "Filter", "FromRows", "GlobalFunction", "Join",
           "Limit", "Mix", "ReadCsv", "ReadHF", "ReadJson", "ReadJsonl", "ReadParquet", "Rename", "RowFilter", "RowFunction",
           "Sample", "Select", "SplitPart", "Validate", "WithColumns"]
