"""Training hand-off (SFT, DPO, GRPO on TRL). Not built yet: outputs are Parquet files in the
canonical schemas (see ``dataflow.schemas``), which TRL loads with ``load_dataset("parquet", ...)``."""
