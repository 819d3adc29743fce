"""Small helpers for the generated result pages: accuracies over seeds, provenance from the runs that
produced the numbers, and whether a page is already up to date with them."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
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


# -- provenance of numbers that come from saved runs ---------------------------------------------

ENVIRONMENT_FIELDS = ("commit", "python", "numpy", "blas", "cpu_count", "machine", "command")


def runs_environment(records: Sequence[dict]) -> dict:
    """Where the numbers of ``records`` (saved runs) came from, from each run's own environment: for each
    field one value where every run agrees, else ``{value: number of runs}``; ``dates``: first and last."""
    environments = [r["environment"] for r in records if isinstance(r.get("environment"), dict)]
    summary: dict = {"runs": len(environments)}
    for name in ENVIRONMENT_FIELDS:
        counts = Counter(env.get(name, "?") for env in environments)
        summary[name] = next(iter(counts)) if len(counts) == 1 else {str(k): n for k, n in counts.most_common()}
    threads = Counter(json.dumps(env.get("thread_env", {}), sort_keys=True) for env in environments)
    summary["thread_env"] = json.loads(next(iter(threads))) if len(threads) == 1 else dict(threads.most_common())
    dates = sorted(str(env["date"]) for env in environments if env.get("date"))
    summary["dates"] = [dates[0], dates[-1]] if dates else []
    return summary


def _either(value, unit: str = "runs") -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} ({count} {unit})" for key, count in value.items())
    return str(value)


def provenance_line(summary: dict) -> str:
    """``Numbers from 27 runs made by `python experiments/compare.py` between DATE and DATE, at commit C;
    Python ..., NumPy ... (BLAS), 2 CPUs, Linux x86_64.`` (mixed values are listed with their counts)."""
    dates = summary["dates"]
    when = (f" on {dates[0]}" if dates and dates[0] == dates[-1] else f" between {dates[0]} and {dates[-1]}") if dates else ""
    threads = summary["thread_env"]
    thread_text = (", " + ", ".join(f"{k}={v}" for k, v in threads.items())) if threads and not any(
        isinstance(v, int) for v in threads.values()) else ""
    return (f"Numbers from {summary['runs']} runs made by `{_either(summary['command'])}`{when}, at commit "
            f"{_either(summary['commit'])}; Python {_either(summary['python'])}, NumPy {_either(summary['numpy'])} "
            f"({_either(summary['blas'])}), {_either(summary['cpu_count'])} CPUs, {_either(summary['machine'])}"
            f"{thread_text}.")


def render_key(records: Sequence[dict], code_files: Sequence[Path]) -> str:
    """A hash of what a generated page is made from: the saved runs it reads (their full records) and
    the code that renders it. The same key means re-rendering would write the same page."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: (str(r.get("key")), str(r.get("seed")))):
        digest.update(json.dumps(record, sort_keys=True, default=str).encode())
    for path in code_files:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def up_to_date(key: str, environment_file: Path, outputs: Sequence[Path]) -> bool:
    """True when every file of ``outputs`` exists and ``environment_file`` records ``key`` as what they
    were rendered from: then nothing needs writing (and nothing is touched)."""
    try:
        recorded = json.loads(environment_file.read_text(encoding="utf-8")).get("rendered_from")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == key and all(path.is_file() for path in outputs)
