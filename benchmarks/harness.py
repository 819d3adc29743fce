"""What the benchmark scripts share: where a run writes, their options, BLAS threads, worker processes,
the training data, provenance, and the marked sections of the result files.

It imports no benchmark script, so every script can import it, and the scripts import each other
only downwards, without a cycle (a test checks)::

    compare_libraries -> mlp_scaling -> profile_epoch -> conv_speed -> harness
    compare_libraries, mlp_scaling, profile_epoch -> core_speed -> harness
    compare_libraries -> under_load -> conv_speed

Where a run writes (:func:`output_folder`): ``--out DIR`` when given; otherwise ``results/local/benchmarks/``
(git-ignored) for a ``--quick`` run or for a run that lacks a library the committed results in
``results/`` include, so a user's own runs never overwrite the committed figures; otherwise ``results/``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

from common.cli import OneLineParser, positive_int, writable_folder
from common.files import atomic_write_json, atomic_write_text
from common.nn.errors import UserError
from common.paths import LOCAL_DIR, REPO_ROOT, RESULTS_DIR, shown

QUICK_DIR = LOCAL_DIR / "benchmarks"
JSON_NAME, MARKDOWN_NAME = "benchmark.json", "benchmark.md"
CONV_SECTION = "conv"          # conv_speed.py --stage 06
BN_CONV_SECTION = "bn_conv"    # conv_speed.py --stage 07
CONV_TOP_KEYS = {CONV_SECTION: ("conv_ratio_vs_pytorch",),  # the top-level keys beside each record
                 BN_CONV_SECTION: ("bn_conv_ratio_vs_pytorch", "bn_conv_seconds_per_epoch")}
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_REEXEC_MARK = "_BENCHMARK_REEXEC"

Parser = OneLineParser  # a bad option ends with one ``error: ...`` line and exit code 2


# --------------------------------------------------------------------------- where a run writes

def committed_libraries(path: Path = RESULTS_DIR / JSON_NAME, section: str | None = None) -> set[str]:
    """The libraries measured (``seconds_per_epoch`` not null) in the JSON record at ``path``, or in
    its ``section`` record (``"conv"``): what the committed results include. Empty if it cannot be read."""
    try:
        record = read_json_object(Path(path))
    except (UserError, OSError):
        return set()
    if section is not None:
        record = record.get(section)
    seconds = record.get("seconds_per_epoch") if isinstance(record, dict) else None
    return {lib for lib, value in seconds.items() if value is not None} if isinstance(seconds, dict) else set()


def output_folder(out: str | None, quick: bool, missing: Iterable[str] = (),
                  committed: Iterable[str] = ()) -> tuple[Path, str]:
    """``(folder, why)``: ``out`` if given; else ``results/local/benchmarks/`` for a ``quick`` run or one in which a
    ``committed`` library is ``missing`` (not installed); else ``results/``."""
    if out is not None:
        return Path(out), "--out"
    if quick:
        return QUICK_DIR, "a --quick run: the committed results stay as they are"
    lacking = sorted(set(missing) & set(committed))
    if lacking:
        return QUICK_DIR, (f"{', '.join(lacking)} not installed here but in the committed results, which "
                           f"stay as they are")
    return RESULTS_DIR, "the default"


def announce_output(folder: Path, why: str) -> None:
    """Say on stdout, before any measuring, where the results will go and why."""
    print(f"results go to {shown(folder)}/ ({why}; --out DIR chooses)", flush=True)


# --------------------------------------------------------------------------- options

def add_run_options(parser: argparse.ArgumentParser, out_help: str) -> None:
    """--threads, --out, --data-dir and --seed, the options every library benchmark shares."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for every library (default: the BLAS's current count)")
    parser.add_argument("--out", default=None, help=out_help)
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default: data/mnist)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; round r uses seed + r (default 0)")


def add_worker_options(parser: argparse.ArgumentParser, libraries: Sequence[str]) -> None:
    """The internal options of a worker process (hidden from --help)."""
    parser.add_argument("--worker", choices=libraries, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=positive_int, default=1, help=argparse.SUPPRESS)


# --------------------------------------------------------------------------- threads and worker processes

def ensure_blas_threads(threads: int | None) -> None:
    """Make the BLAS use ``threads`` threads: set the env vars and, if they changed, re-exec.

    OpenBLAS reads its thread count once, when NumPy is first imported, so the only reliable
    way is to start again with the variables set. ``None`` leaves the environment as it is.
    """
    if threads is None:
        return
    wanted = str(threads)
    if all(os.environ.get(var) == wanted for var in THREAD_VARS):
        return
    if os.environ.get(_REEXEC_MARK):  # the variables did not stick: do not loop
        raise UserError(f"could not set {', '.join(THREAD_VARS)} to {wanted}")
    for var in THREAD_VARS:
        os.environ[var] = wanted
    os.environ[_REEXEC_MARK] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    os.execv(sys.executable, [sys.executable, *argv[1:]])


def blas_threads() -> int:
    """The number of threads NumPy's BLAS will use (threadpoolctl if present, else env / CPUs)."""
    try:
        from threadpoolctl import threadpool_info  # optional: only for reporting

        counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"
                  and "numpy" in str(info.get("filepath", "")).replace("\\", "/").split("/site-packages/")[-1]]
        if not counts:
            counts = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]
        if counts:
            return int(counts[0])
    except Exception:  # threadpoolctl missing or its layout changed
        pass
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def worker_environment(threads: int | None) -> dict[str, str]:
    """The workers' environment: this one, with ``common`` importable and, for ``--threads N``, the
    BLAS thread variables set (OpenBLAS reads them when NumPy starts, i.e. in the worker)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if threads:
        env.update({var: str(threads) for var in THREAD_VARS})
    return env


def worker_thread_env(threads: int | None) -> dict[str, str]:
    """The thread variables the workers run with (not this process's), for the ``environment`` record."""
    env = worker_environment(threads)
    return {key: env[key] for key in (*THREAD_VARS, "OPENBLAS_CORETYPE") if key in env}


def run_worker(script: str | Path, arguments: Sequence[str], threads: int | None, label: str) -> dict:
    """Run ``script *arguments --worker-result PATH`` in a fresh interpreter and return the JSON
    object it wrote there, with ``process_seconds`` added. ``threads`` (if given) goes to the BLAS
    thread variables of its environment; a failed worker is a one-line :class:`UserError`."""
    with tempfile.TemporaryDirectory(prefix="benchmark_worker_") as folder:
        result_path = Path(folder) / "result.json"
        command = [sys.executable, str(Path(script).resolve()), *arguments, "--worker-result", str(result_path)]
        sys.stdout.flush()
        start = time.perf_counter()
        finished = subprocess.run(command, env=worker_environment(threads), stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        message = finished.stderr.strip()
        if finished.returncode or not result_path.is_file():
            lines = [line for line in message.splitlines() if line.strip()]
            last = lines[-1] if lines else f"exit code {finished.returncode}"
            raise UserError(f"the {label} worker failed: {last.removeprefix('error: ')}")
        if message:
            print(message, file=sys.stderr)
        return {**json.loads(result_path.read_text(encoding="utf-8")), "process_seconds": elapsed}


# --------------------------------------------------------------------------- data and figures

def load_training_data(data_dir: str | None = None):
    """``(x_train float32 [0, 1] (60000, 784), y_train (60000,), x_test (10000, 784), y_test)`` from the real MNIST."""
    from common.data import load_mnist
    from common.protocol import scale_pixels

    mnist = load_mnist(data_dir, progress=False)
    return (scale_pixels(mnist.train_images, "unit"), mnist.train_labels,
            scale_pixels(mnist.test_images, "unit"), mnist.test_labels)


def per_epoch_seconds(history: list[dict]) -> list[float]:
    """Training seconds of each epoch, from ``train``'s history (its ``train_seconds`` are cumulative)."""
    cumulative = [0.0] + [record["train_seconds"] for record in history]
    return [b - a for a, b in zip(cumulative[:-1], cumulative[1:])]


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, pattern: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, pattern)


# --------------------------------------------------------------------------- provenance

def installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def library_versions() -> dict:
    return {name: __import__(module).__version__ if installed(module) else "not installed"
            for name, module in (("torch", "torch"), ("scikit-learn", "sklearn"))}


def short_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit.stdout.strip() if commit.returncode == 0 and commit.stdout.strip() else "none (no commit yet)"


def command_line(argv: Sequence[str] | None = None, script: str | Path | None = None) -> str:
    """The command that ran, e.g. ``python benchmarks/compare_libraries.py --quick`` (``argv`` and
    ``script`` default to this process's own)."""
    script = Path(sys.argv[0] if script is None else script)
    try:
        script = script.resolve().relative_to(REPO_ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *(sys.argv[1:] if argv is None else argv)])


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run_environment(threads: int, load_start: float | None, argv: Sequence[str] | None = None,
                    script: str | Path | None = None, env_threads: int | None = None) -> dict:
    """The ``environment`` record of a benchmark run (what :func:`environment_lines` prints): machine,
    CPU, versions, commit, threads, the workers' thread variables (``env_threads``: ``--threads``),
    command, and the 1-minute load average at the start and now."""
    from common.environment import describe_environment

    return {**describe_environment(), **library_versions(), "commit": short_commit(), "threads": threads,
            "thread_env": worker_thread_env(env_threads), "command": command_line(argv, script),
            "load_average_1min": [load_start, load_average()]}


def environment_lines(env: dict) -> list[str]:
    """The environment record as markdown list items."""
    thread_env = ", ".join(f"{k}={v}" for k, v in env["thread_env"].items()) or "no thread variables set"
    return [
        f"- date: {env['date']}",
        f"- commit: {env['commit']}",
        f"- Python {env['python']}, NumPy {env['numpy']} ({env['blas']})",
        f"- torch {env['torch']}, scikit-learn {env['scikit-learn']}",
        f"- threads: {env['threads']} for every library (env: {thread_env}; "
        f"`torch.set_num_threads({env['threads']})`); CPUs: {env['cpu_count']}"
        + (f" ({env['cpu']})" if "cpu" in env else ""),  # records before the CPU was recorded: the count only
        f"- command: `{env['command']}`",
        f"- 1-minute load average at start / end: {fmt(env['load_average_1min'][0], '.1f')} / "
        f"{fmt(env['load_average_1min'][1], '.1f')} (above the CPU count means other processes "
        f"competed for the cores: expect slower, noisier figures, worst with several threads)",
    ]


# --------------------------------------------------------------------------- marked sections of the result files

def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _span(text: str, name: str) -> tuple[int, int] | None:
    """``(start, end)`` of the marked section ``name`` in ``text`` (markers included), or None."""
    start_mark, end_mark = markers(name)
    start, end = text.find(start_mark), text.find(end_mark)
    if start < 0 and end < 0:
        return None
    if start < 0 or end < start or text.find(start_mark, start + 1) >= 0:
        raise UserError(f"the {name} section's markers ({start_mark} ... {end_mark}) are broken; "
                        f"repair or delete them and run again")
    return start, end + len(end_mark)


def extract_section(text: str, name: str) -> str | None:
    """The marked section ``name`` of ``text``, markers included, or None; broken markers: :class:`UserError`."""
    span = _span(text, name)
    return None if span is None else text[span[0]:span[1]]


def replace_section(text: str, name: str, section: str) -> str:
    """``text`` with its marked section ``name`` replaced by ``section`` (markers included), or
    with ``section`` appended after a blank line; everything else is kept as it is."""
    span = _span(text, name)
    if span is not None:
        return text[:span[0]] + section + text[span[1]:]
    body = text.rstrip("\n")
    return (body + "\n\n" if body else "") + section + "\n"


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; ``{}`` if there is no file. A file that is not a JSON object
    is a :class:`UserError` (it is not overwritten: it may hold results)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot merge into {path}: not valid JSON ({error}); move it away and run again") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot merge into {path}: it holds a JSON {type(data).__name__}, not an object")
    return data


def prepare_output(out: str | None, quick: bool, skipped: dict, section: str,
                   committed_section: str | None = None) -> Path:
    """The folder a script that merges its ``section`` writes to (:func:`output_folder`; the committed
    libraries read from ``committed_section``, default ``section``), checked before minutes of measuring,
    not after: writable, valid JSON, unbroken markers. Says where on stdout."""
    folder, why = output_folder(out, quick, skipped,
                                committed_libraries(RESULTS_DIR / JSON_NAME, committed_section or section))
    writable_folder(folder)
    if (folder / MARKDOWN_NAME).exists():
        extract_section((folder / MARKDOWN_NAME).read_text(encoding="utf-8"), section)
    read_json_object(folder / JSON_NAME)
    announce_output(folder, why)
    return folder


def merge_section(out: Path, name: str, record: dict, top_keys: dict, section: str) -> None:
    """Merge ``record`` (as key ``name``, with the ``top_keys`` beside it) into ``out/benchmark.json`` and
    ``section`` (markers included) into ``out/benchmark.md``; everything else in both files is kept."""
    merged = {**read_json_object(out / JSON_NAME), name: record, **top_keys}
    markdown_path = out / MARKDOWN_NAME
    existing = markdown_path.read_text(encoding="utf-8") if markdown_path.exists() else ""
    markdown = replace_section(existing, name, section)  # checks the markers first
    atomic_write_json(out / JSON_NAME, merged)
    atomic_write_text(markdown_path, markdown)


def carry_over_conv(out: Path, record: dict, markdown: str, render: Callable[[dict], str]) -> tuple[dict, str]:
    """For ``compare_libraries.py``, which writes ``benchmark.json`` / ``benchmark.md`` whole: keep
    the ``conv`` and ``bn_conv`` records of the files it replaces (``conv_speed.py --stage 06`` and
    ``--stage 07``), their top-level keys, and their sections, ``render(record)``, in the new markdown.
    (:func:`carry_over_section` for each.)"""
    for name, top_keys in CONV_TOP_KEYS.items():
        record, markdown = carry_over_section(out, record, markdown, render, name, top_keys)
    return record, markdown


def carry_over_section(out: Path, record: dict, markdown: str, render: Callable[[dict], str], name: str,
                       top_keys: Sequence[str] = ()) -> tuple[dict, str]:
    """Keep the ``name`` record of the ``benchmark.json`` in ``out`` (and its ``top_keys``) in ``record``,
    and its section, ``render(that record)``, in ``markdown``: for a script that writes both files whole.

    Never fails (a long measurement must not be lost at the last step): a record that cannot be
    read or rendered falls back to the old markdown's section, kept verbatim, with a warning.
    """
    try:
        old = read_json_object(out / JSON_NAME)
    except UserError as error:
        print(f"warning: {error}; the {name} results in it are not carried over", file=sys.stderr)
        old = {}
    section = None
    if isinstance(old.get(name), dict):
        record = {**record, name: old[name], **{key: old.get(key) for key in top_keys}}
        try:
            section = render(old[name])
        except (KeyError, TypeError, ValueError, IndexError) as error:
            print(f"warning: cannot render the {name} section from {out / JSON_NAME} ({error!r}); "
                  f"keeping the old one", file=sys.stderr)
    if section is None:
        try:
            section = extract_section((out / MARKDOWN_NAME).read_text(encoding="utf-8"), name)
        except (OSError, UnicodeDecodeError, UserError):
            section = None
    return record, (replace_section(markdown, name, section) if section else markdown)
