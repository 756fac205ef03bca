"""Built-in operators, in families (one folder each; see ARCHITECTURE.md). Most core ones are also
Node methods (``node.filter(...)`` etc.)."""

from dataflow.operators.core import *  # noqa: F403
from dataflow.operators.core import __all__ as _core
from dataflow.operators.curation import *  # noqa: F403
from dataflow.operators.curation import __all__ as _curation
from dataflow.operators.formats import *  # noqa: F403
from dataflow.operators.formats import __all__ as _formats
from dataflow.operators.generation import *  # noqa: F403
from dataflow.operators.generation import __all__ as _generation
from dataflow.operators.judging import *  # noqa: F403
from dataflow.operators.judging import __all__ as _judging
from dataflow.operators.rewards import *  # noqa: F403
from dataflow.operators.rewards import __all__ as _rewards
from dataflow.operators.selection import *  # noqa: F403
from dataflow.operators.selection import __all__ as _selection

__all__ = sorted([*_core, *_curation, *_formats, *_generation, *_judging, *_rewards, *_selection])
