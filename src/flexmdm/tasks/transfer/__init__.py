"""The transfer benchmark's task (paper §5.2 at CPU scale): one pretrained MDM, two instruction-tuned arms.

* :mod:`~flexmdm.tasks.transfer.data` — the pretraining corpus, the instruction pairs and the
  evaluation sets, built from a seed with held-out modules and problems kept out.
* :mod:`~flexmdm.tasks.transfer.evaluation` — math accuracy, code infilling and HumanEval pass@1
  of a pipeline (imported on its own).
"""

from flexmdm.tasks.transfer.data import TransferData, TransferFiles, build_transfer_data, math_text

__all__ = ["TransferData", "TransferFiles", "build_transfer_data", "math_text"]
