"""The libraries' own terminal output (progress bars, raw log dicts, deprecation notes) off, so a
command prints its own lines."""

from __future__ import annotations

import warnings


def quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*is deprecated", category=FutureWarning)
