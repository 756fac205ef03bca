"""What a build's outputs are for: training on TRL (``train``, runs in ``runs``), exports for other
trainers (``exports``) and evaluation (``evaluation``). The ``dataflow train``, ``export`` and
``eval`` commands call these."""
