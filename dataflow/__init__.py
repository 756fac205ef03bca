"""dataflow: build post-training data for LLMs as a DAG of declarative operators."""

from dataflow.memory import release_freed_pages

release_freed_pages()  # before anything imports polars

from dataflow.errors import CompileError, DataflowError, GateError, RowError
from dataflow.operator import Context, Operator, Rejection, Result
from dataflow.operators.core.functions import batch_op, global_op, row_op
from dataflow.pipeline import Node, Pipeline

__version__ = "0.1.0"
__all__ = ["CompileError", "Context", "DataflowError", "GateError", "Node", "Operator", "Pipeline", "Rejection",
           "Result", "RowError", "batch_op", "global_op", "row_op"]
