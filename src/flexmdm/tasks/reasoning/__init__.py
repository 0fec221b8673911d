"""Reasoning as infilling on arithmetic word problems (Horvitz et al., *No Compute Left Behind:
Rethinking Reasoning and Sampling with Masked Diffusion Models*, arXiv:2510.19990).

* :mod:`~flexmdm.tasks.reasoning.problems` — multi-step word problems in GSM8K's format.
* :mod:`~flexmdm.tasks.reasoning.gsm8k` — GSM8K JSONL loading, answer extraction and scoring.
* :mod:`~flexmdm.tasks.reasoning.template` — the question / reasoning / answer template, its
  tokenizer, the FlexMDM and MDM layouts.
* :mod:`~flexmdm.tasks.reasoning.task` — :class:`ReasoningTask`, registered as ``reasoning``.
* :mod:`~flexmdm.tasks.reasoning.inference` — early exit on answer entropy, posterior sampling of
  reasoning given an answer, scoring a partial reasoning trace.
"""

from flexmdm.tasks.reasoning.gsm8k import (
    accuracy,
    answers_match,
    calculator_annotations,
    extract_answer,
    load_gsm8k,
    normalize_number,
    write_gsm8k,
)
from flexmdm.tasks.reasoning.problems import (
    OPERATION_SETS,
    OPERATIONS,
    Problem,
    generate_problem,
    generate_problems,
    parse_question,
)
from flexmdm.tasks.reasoning.task import EncodedProblems, ReasoningTask
from flexmdm.tasks.reasoning.template import DELIMITERS, Decoded, ReasoningTemplate, template_parts

__all__ = [
    "DELIMITERS",
    "Decoded",
    "EncodedProblems",
    "OPERATIONS",
    "OPERATION_SETS",
    "Problem",
    "ReasoningTask",
    "ReasoningTemplate",
    "accuracy",
    "answers_match",
    "calculator_annotations",
    "extract_answer",
    "generate_problem",
    "generate_problems",
    "load_gsm8k",
    "normalize_number",
    "parse_question",
    "template_parts",
    "write_gsm8k",
]
