"""The run cache the experiment scripts share: one JSON result per (run key, seed), reused while
nothing that decides its numbers has changed.

A result is saved under ``<runs_dir>/<key>/seed<seed>.json`` (atomically) with a fingerprint: a
hash of the stage's settings, the seed, and the code (docstrings and comments left out) of the
stage script and of every file that decides the numbers, which is all of ``common/nn/`` (by folder, so a new module there is covered without
being listed) and ``common/protocol.py`` (the data splits, pixel scaling and the train-and-evaluate
steps every run goes through). The data loader is not in it: it only returns the verified bytes. A re-run with the same fingerprint reuses the saved result, so an interrupted
study resumes where it stopped; a changed setting or a change to that code trains again.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import tokenize
import traceback
from pathlib import Path

from common.files import atomic_write_json
from common.nn.errors import UserError
from common.paths import REPO_ROOT
from common.protocol import StageSpec

NUMERIC_CORE = Path("common", "nn")
PROTOCOL_MODULES = (Path("common", "protocol.py"),)
CODE_ROOT = REPO_ROOT  # where that code is read from (the tests point it at a frozen copy)


def numeric_code_files(stage_file: Path | None = None) -> list[Path]:
    """Every file whose change can move a number: ``common/nn/**.py``, the protocol modules, the stage."""
    files = sorted((CODE_ROOT / NUMERIC_CORE).rglob("*.py")) + [CODE_ROOT / name for name in PROTOCOL_MODULES]
    return files + ([stage_file] if stage_file is not None else [])


def code_tokens(source: str) -> str:
    """The code of a module without its docstrings, comments and blank lines: the tokens the
    interpreter runs, so that correcting a sentence does not invalidate hours of saved runs."""
    docstring_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                docstring_lines.update(range(first.lineno, first.end_lineno + 1))
    kept = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.INDENT, tokenize.DEDENT):
            kept.append(tokenize.tok_name[token.type])  # block structure, wherever it starts
        elif token.type not in (tokenize.COMMENT, tokenize.NL) and token.start[0] not in docstring_lines:
            kept.append(token.string)
    return " ".join(kept)


@functools.lru_cache(maxsize=None)
def code_of(path: Path) -> str:
    """:func:`code_tokens` of a source file as it was when this process first read it: an edit
    during a long run cannot label a result with code it did not run."""
    return code_tokens(path.read_text(encoding="utf-8"))


def code_digest(stage_file: Path | None = None, cached: bool = True) -> str:
    """A hash of the code of :func:`numeric_code_files`, with their names; ``cached=False`` reads the disk now."""
    digest = hashlib.sha256()
    for path in numeric_code_files(stage_file):
        digest.update(path.name.encode())
        digest.update((code_of(path) if cached else code_tokens(path.read_text(encoding="utf-8"))).encode())
    return digest.hexdigest()


def fingerprint(spec: StageSpec, seed: int, stage_file: Path | None) -> str:
    """A hash of everything that determines a result: settings, seed and the numeric code."""
    settings = json.dumps({"settings": spec.settings(), "seed": seed}, sort_keys=True)
    return hashlib.sha256((settings + code_digest(stage_file)).encode()).hexdigest()[:16]


def run_path(runs_dir: Path, key: str, seed: int) -> Path:
    """Where the result of (key, seed) is kept."""
    return runs_dir / key.replace("@", "_at_") / f"seed{seed}.json"


def saved_fingerprint(path: Path) -> str | None:
    """The fingerprint of the result saved at ``path``, or None if there is none (or it is unreadable)."""
    try:
        return json.loads(path.read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def run_or_resume(key: str, spec: StageSpec, seed: int, stage_file: Path | None, data, runs_dir: Path,
                  force: bool, progress: bool) -> dict:
    """Return the saved result for (key, seed) if its fingerprint matches, else train and save it.

    A run that fails is saved too, as ``{"status": "failed", "reason": ...}``: a bug or a
    divergence in one stage must not stop the others.
    """
    from common.runner import run_stage  # the runner imports the plotting code only when needed

    path = run_path(runs_dir, key, seed)
    stamp = fingerprint(spec, seed, stage_file)
    if not force and saved_fingerprint(path) == stamp:
        print(f"[{key} seed {seed}] unchanged, reusing {path.relative_to(runs_dir.parent)}", flush=True)
        return json.loads(path.read_text())
    print(f"[{key} seed {seed}] training ...", flush=True)
    try:
        metrics = run_stage(spec, seed, data, out_dir=None, plots=False, progress=progress)
        result = {"status": "ok", **metrics}
    except UserError as error:
        result = {"status": "failed", "reason": str(error)}
    except Exception as error:  # keep the reason, go on with the other runs
        result = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
        traceback.print_exc()
    result.update({"key": key, "stage": spec.name, "seed": seed, "fingerprint": stamp,
                   "settings": spec.settings()})
    result.pop("confusion_matrix", None)
    atomic_write_json(path, result)
    status = (f"test {100 * result['test_accuracy']:.2f} %, {result['seconds']:.1f} s"
              if result["status"] == "ok" else f"FAILED: {result['reason']}")
    print(f"[{key} seed {seed}] {status}", flush=True)
    return result
