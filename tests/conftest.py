"""Test tiers and one torch thread.

The README's ``pytest`` runs the fast tier; ``.ci/run`` runs every tier. Markers:

- ``statistical``: samplers against exact oracles over many draws (tens of seconds each);
- ``e2e``: end to end: benches, subprocesses, kill-and-resume, DDP;
- ``browser``: the replay page in headless Chromium;
- ``slow``: training runs of minutes, run by name.

Torch uses one thread here and in every subprocess the tests start: on a shared 2-core machine,
oversubscribed threads slow small models down by an order of magnitude. Ctrl-C is Python's own
handler here and in those subprocesses even when the suite was started as a shell's background
job (which ignores SIGINT, and a process keeps ignoring what it inherited so): the signal tests
need it.
"""

from __future__ import annotations

import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import torch  # noqa: E402  (after the thread setting, which torch reads at import)

torch.set_num_threads(1)
