"""Small formatting helpers for the generated result pages: accuracies over seeds, provenance."""
from __future__ import annotations

from typing import Sequence

import numpy as np

QUICK_BANNER = "**Quick mode: tiny budgets for smoke tests; these numbers mean nothing.**"


def percent(values: Sequence[float | None], spread: bool = True) -> str:
    """``"98.14 ± 0.11"``: the mean (and sample std, over two or more values) of fractions, in %."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = 100 * float(np.mean(values))
    if spread and len(values) > 1:
        return f"{mean:.2f} ± {100 * float(np.std(values, ddof=1)):.2f}"
    return f"{mean:.2f}"


def environment_line(environment: dict) -> str:
    """``Produced by `COMMAND` on DATE, commit C; Python, NumPy (BLAS), CPUs, machine, thread settings.``"""
    threads = environment["thread_env"]
    return (f"Produced by `{environment['command']}` on {environment['date']}, commit {environment['commit']}; "
            f"Python {environment['python']}, NumPy {environment['numpy']} ({environment['blas']}), "
            f"{environment['cpu_count']} CPUs, {environment['machine']}"
            + (f", {', '.join(f'{k}={v}' for k, v in threads.items())}" if threads else "") + ".")
