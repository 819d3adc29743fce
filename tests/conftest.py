"""What every test shares: no test inherits another's ``--threads auto`` watcher.

A script's ``main`` called in-process (as many tests do, without ``common.cli.run_cli``, which
stops it) leaves the watcher of ``--threads auto`` running. On a busy machine it would then change
the thread count, and with it the order of OpenBLAS's sums, in the middle of a later test that
expects two runs in one process to agree to the bit.
"""
from __future__ import annotations

import pytest

from common import threads


@pytest.fixture(autouse=True)
def no_thread_watcher_left_running():
    yield
    threads.stop()
