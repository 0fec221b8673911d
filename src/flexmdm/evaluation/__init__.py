"""``flexmdm eval``: a trained model on data files, scored as the benchmarks score it.

* :mod:`~flexmdm.evaluation.commands` — the ``flexmdm eval gsm8k`` and ``flexmdm eval
  humaneval-infill`` parsers and runners.
* :mod:`~flexmdm.evaluation.common` — loading a model for a task, the decoding rule, the output
  file and the provenance header shared by both.
* :mod:`~flexmdm.evaluation.gsm8k` — GSM8K-format problems with a model of the ``reasoning``
  task: accuracy, network calls, reasoning length.
* :mod:`~flexmdm.evaluation.humaneval` — HumanEval single-line infilling with a model of the
  ``infill`` task: pass@1 by execution, exact match, parse rate, middle-length error.
"""
