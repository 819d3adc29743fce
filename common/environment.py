"""Where a number came from: date, commit, Python, NumPy and its BLAS, CPU count and model, command."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from common import threads as arithmetic_threads
from common.paths import REPO_ROOT


def git_commit(root: Path = REPO_ROOT) -> str:
    """The current commit, with ``+dirty`` if tracked files other than generated output have
    changes; ``unknown`` outside a git work tree.

    ``results/`` and ``README.md`` (whose results block ``experiments/compare.py`` rewrites) are
    left out of the check: regenerating results rewrites them, and counting them would mark every
    later regeneration as dirty.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)README.md"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def blas_name() -> str:
    """The BLAS NumPy was built against, e.g. ``scipy-openblas 0.3.29``."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # the layout of show_config differs between NumPy versions
        return "unknown"


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU's model name and its widest vector instructions, e.g. ``AMD EPYC (family 23, model 49), AVX2``.

    Recorded because speed ratios between libraries depend on the instructions a CPU has, not only on
    its speed (``benchmarks/README.md``). Read from Linux's ``/proc/cpuinfo`` (``cpuinfo``: its text,
    for tests); elsewhere ``platform.processor()`` without the instructions.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return platform.processor() or "unknown"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first CPU's
    flags = set(fields.get("flags", "").split())
    vector = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
                  "no AVX")
    family = (f" (family {fields['cpu family']}, model {fields['model']})"
              if "cpu family" in fields and "model" in fields else "")
    return f"{fields.get('model name') or platform.processor() or 'unknown'}{family}, {vector}"


def describe_environment(command: list[str] | None = None) -> dict:
    """A JSON-able record of the machine and software a result was produced on."""
    threads = {key: os.environ[key] for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                 "MKL_NUM_THREADS", "OPENBLAS_CORETYPE")
               if key in os.environ}
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_name(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
        "machine": f"{platform.system()} {platform.machine()}",
        "thread_env": threads,
        "command": shlex.join(command if command is not None else [Path(sys.executable).name, *sys.argv]),
    }
    held = arithmetic_threads.describe()  # --threads, as the script applied it
    if held is not None:
        record["threads"] = held
    return record
