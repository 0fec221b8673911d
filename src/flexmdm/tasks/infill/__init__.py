"""Code infilling at flexible length (paper §5.2).

* :mod:`~flexmdm.tasks.infill.functions` — Python functions extracted with ``ast`` from the
  standard library, split by module into train and held-out sets.
* :mod:`~flexmdm.tasks.infill.spans` — single-line and multi-line middle spans.
* :mod:`~flexmdm.tasks.infill.metrics` — exact match, ``ast.parse`` rate, middle-length error.
* :mod:`~flexmdm.tasks.infill.task` — :class:`InfillTask`, registered as ``infill``: FlexMDM
  infilling couplings, or the MDM canvas with a fixed middle budget padded with PAD.
* :mod:`~flexmdm.tasks.infill.evaluation` — filling middles through a pipeline of either family
  (FlexMDM by insertion, MDM on a fixed budget) and scoring them (imported on its own).
* :mod:`~flexmdm.tasks.infill.humaneval` — HumanEval single-line infilling scored pass@1 by
  execution (imported on its own).
"""

from flexmdm.tasks.infill.functions import FunctionSource, extract_functions, split_by_module, stdlib_functions
from flexmdm.tasks.infill.metrics import exact_match, infill_metrics, length_abs_error, parse_rate, parses
from flexmdm.tasks.infill.spans import InfillExample, candidate_spans, cut
from flexmdm.tasks.infill.task import CodeCorpus, InfillTask, build_code_corpus

__all__ = [
    "CodeCorpus",
    "FunctionSource",
    "InfillExample",
    "InfillTask",
    "build_code_corpus",
    "candidate_spans",
    "cut",
    "exact_match",
    "extract_functions",
    "infill_metrics",
    "length_abs_error",
    "parse_rate",
    "parses",
    "split_by_module",
    "stdlib_functions",
]
