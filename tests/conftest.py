"""Test tiers and one torch thread.

The README's ``pytest`` runs the fast tier; ``.ci/run`` runs every tier. Markers:

- ``statistical``: samplers against exact oracles over many draws (tens of seconds each);
- ``e2e``: end to end: benches, subprocesses, kill-and-resume, DDP;
- ``browser``: the replay page in headless Chromium;
- ``slow``: training runs of minutes, run by name.

Torch uses one thread here and in every subprocess the tests start: on a shared 2-core machine,
oversubscribed threads slow small models down by an order of magnitude.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the thread setting, which torch reads at import)

torch.set_num_threads(1)
