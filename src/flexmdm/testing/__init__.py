"""Exact answers to test samplers and losses against.

* :mod:`~flexmdm.testing.exact` — exact FlexMDM and MDM denoisers of enumerable distributions,
  empirical distributions and total variation.
* :mod:`~flexmdm.testing.structured` — structured oracle cases (balanced brackets, aⁿbⁿ, the
  reasoning task's problems, maze paths, a dense toy) with their validity checks.
"""

from flexmdm.testing.exact import ExactFlexOracle, ExactMDMOracle, empirical_distribution, total_variation

__all__ = ["ExactFlexOracle", "ExactMDMOracle", "empirical_distribution", "total_variation"]
