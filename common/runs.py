"""The run cache the experiment scripts share: one JSON result per (run key, seed), reused while
nothing that decides its numbers has changed.

A result is saved under ``<runs_dir>/<key>/seed<seed>.json`` (atomically) with a fingerprint: a
hash of the stage's settings, the seed, and the code (docstrings and comments left out) of the
stage script and of every file that decides the numbers, which is all of ``common/nn/`` (by folder, so a new
module there is covered without being listed) but the modules a saved run never executes
(:data:`NEVER_RUN`: the textbook, for reading and for ``--reference``), and ``common/protocol.py`` (the data splits, pixel scaling and the train-and-evaluate
steps every run goes through). The data loader is not in it: it only returns the verified bytes.
Code that only some runs execute is left out of the others' fingerprints: a *feature* (:data:`FEATURES`,
such as batch normalization) lives in modules named after it and in statements that name it, and a run that
does not use it is fingerprinted without them, so adding a layer kind keeps every saved run that cannot
execute it (``tests/test_results_reproduce.py`` traces runs of every kind to prove they never do).
A re-run with the same fingerprint reuses the saved result, so an interrupted study resumes where
it stopped; a changed setting or a change to that code trains again. A study may also read results
from other folders without writing there (``sources``: a run of your own reuses the committed
results), and it reports its overall progress (:class:`Progress`): runs done of all, the time so far
and an estimate of the time left from the saved runs' own times.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import time
import tokenize
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from common.environment import describe_environment
from common.files import atomic_write_json
from common.nn.errors import UserError
from common.paths import LOCAL_DIR, REPO_ROOT, shown
from common.protocol import StageSpec, TrainedStage, stage_metrics, train_stage
from common.serialize import save_network

MODELS_DIR = LOCAL_DIR / "models" / "by-fingerprint"
"""Every model a study trains is kept here as ``<fingerprint>.npz`` (git-ignored), so a later study that
needs the same model (the robustness experiment measures the comparison's) loads it instead of training it."""

NUMERIC_CORE = Path("common", "nn")
PROTOCOL_MODULES = (Path("common", "protocol.py"),)
NEVER_RUN = ("reference.py", "textbook.py", "gradcheck.py")
"""Modules of the core a saved run never executes: the textbook and its layers (only ``--reference``
and the exercises run them, and those runs are not saved here) and the tests' finite differences.
``tests/test_results_reproduce.py`` traces a run of every kind to prove it; editing them keeps every
saved result."""
CODE_ROOT = REPO_ROOT  # where that code is read from (the tests point it at a frozen copy)


FEATURES = {
    "batchnorm": "batch normalization: a 'batchnorm' layer",
    "affine": "random affine distortions: an affine_* setting above 0",
    "elastic": "random elastic distortions: an elastic_* setting above 0",
    "recalibrate": "batch-norm statistics re-estimated after training: recalibrate_batchnorm",
    "label_smoothing": "cross-entropy against smoothed targets: label_smoothing above 0",
}
"""Parts of the core only some runs execute. Each lives in modules whose name contains the feature's word
and, elsewhere in the core, in statements that name it (an identifier, attribute or string containing the
word, any case): a module-level or class-level statement, a function or class, or an ``if`` / ``elif``
clause whose test names it. A run that does not use a feature is fingerprinted without them."""


def features_used(settings: dict) -> frozenset[str]:
    """The :data:`FEATURES` a run with these settings (``StageSpec.settings()``) executes."""
    used = set()
    if any(str(layer).split()[:1] == ["batchnorm"] for layer in settings.get("layers") or ()):
        used.add("batchnorm")
    for word in ("affine", "elastic", "recalibrate", "label_smoothing"):
        if any(value for key, value in settings.items() if is_feature_setting(key, word)):
            used.add(word)
    return frozenset(used)


def is_feature_setting(key: str, word: str) -> bool:
    """Whether the setting ``key`` belongs to the feature ``word``: it is the word, or starts with ``word_``."""
    return key == word or key.startswith(f"{word}_")


def _names_feature(node: ast.AST, word: str) -> bool:
    """Whether ``node`` names the feature ``word``: an identifier, attribute, argument, import or string in
    it contains the word (any case)."""
    for part in ast.walk(node):
        for text in (getattr(part, "id", None), getattr(part, "attr", None), getattr(part, "arg", None),
                     getattr(part, "name", None), getattr(part, "asname", None),
                     part.value if isinstance(part, ast.Constant) and isinstance(part.value, str) else None):
            if isinstance(text, str) and word in text.lower():
                return True
    return False


def feature_lines(source: str, word: str) -> set[int]:
    """The lines of ``source`` that belong to the feature ``word`` (see :data:`FEATURES`), to leave out."""
    lines: set[int] = set()

    def span(node: ast.stmt, end: int | None = None) -> None:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        lines.update(range(first, (end or node.end_lineno) + 1))

    def visit(body: list[ast.stmt], in_function: bool) -> None:
        for node in body:
            if isinstance(node, ast.If):
                clause: ast.stmt | None = node
                while isinstance(clause, ast.If):
                    if _names_feature(clause.test, word):
                        if clause is node and node.orelse:
                            raise ValueError(f"line {node.lineno}: a feature's 'if' must stand alone "
                                             "(or be an 'elif'), so that leaving it out leaves valid code")
                        span(clause, clause.body[-1].end_lineno)
                    else:
                        visit(clause.body, in_function)
                    rest = clause.orelse
                    is_elif = len(rest) == 1 and isinstance(rest[0], ast.If) and rest[0].col_offset == clause.col_offset \
                        and source.split("\n")[rest[0].lineno - 1].lstrip().startswith("elif")
                    if not is_elif:
                        visit(rest, in_function)
                        break
                    clause = rest[0]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if word in node.name.lower():
                    span(node)
                else:
                    visit(node.body, isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or in_function)
            elif isinstance(node, (ast.For, ast.While, ast.With, ast.Try)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []), in_function)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body, in_function)
            elif _names_feature(node, word):
                if in_function:
                    raise ValueError(f"line {node.lineno}: a statement naming {word!r} inside a function runs "
                                     "for every run; put it under an 'if' whose test names the feature")
                span(node)

    visit(ast.parse(source).body, in_function=False)
    return lines


def without_features(source: str, words: frozenset[str]) -> str:
    """``source`` without the lines of the features ``words``."""
    dropped = set().union(*(feature_lines(source, word) for word in words)) if words else set()
    return "\n".join(line for number, line in enumerate(source.split("\n"), start=1) if number not in dropped)


def numeric_code_files() -> list[Path]:
    """Every file whose change can move a number: ``common/nn/**.py`` (but :data:`NEVER_RUN`) and the
    protocol modules. A stage script is not among them: a study loads it for its ``SPEC``, whose values
    are the run's settings, hashed as such."""
    files = sorted(path for path in (CODE_ROOT / NUMERIC_CORE).rglob("*.py") if path.name not in NEVER_RUN)
    return files + [CODE_ROOT / name for name in PROTOCOL_MODULES]


_FSTRING_START = getattr(tokenize, "FSTRING_START", object())  # object(): a type no token has (Python < 3.12)
_FSTRING_END = getattr(tokenize, "FSTRING_END", object())


def code_tokens(source: str, skip_spec: bool = False) -> str:
    """The code of a module without its docstrings, comments and blank lines: the tokens the
    interpreter runs, so that correcting a sentence does not invalidate hours of saved runs.

    ``skip_spec``: leave out a stage script's ``SPEC = StageSpec(...)`` too. Its values are the run's
    settings, which the fingerprint holds already, and only the settings a run uses should decide it:
    changing a stage's default (say, after tuning) must not invalidate the tuning runs that tried
    other values. Any other code in a stage script still counts."""
    skipped_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                skipped_lines.update(range(first.lineno, first.end_lineno + 1))
        if skip_spec and isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["SPEC"]:
            skipped_lines.update(range(node.lineno, node.end_lineno + 1))
    kept = []
    line_offsets = [0]
    for line in source.split("\n"):
        line_offsets.append(line_offsets[-1] + len(line) + 1)
    fstring_start, fstring_depth = (0, 0), 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        # Python 3.12+ splits an f-string into parts (PEP 701); keep it whole, as its source text, as
        # earlier Pythons do, so that a fingerprint is the same on every Python the suite supports.
        if token.type == _FSTRING_START:
            fstring_start = fstring_start if fstring_depth else token.start
            fstring_depth += 1
            continue
        if fstring_depth:
            if token.type == _FSTRING_END:
                fstring_depth -= 1
                if not fstring_depth and fstring_start[0] not in skipped_lines:
                    begin = line_offsets[fstring_start[0] - 1] + fstring_start[1]
                    kept.append(source[begin:line_offsets[token.end[0] - 1] + token.end[1]])
            continue
        if token.type in (tokenize.INDENT, tokenize.DEDENT):
            kept.append(tokenize.tok_name[token.type])  # block structure, wherever it starts
        elif token.type not in (tokenize.COMMENT, tokenize.NL) and token.start[0] not in skipped_lines:
            kept.append(token.string)
    return " ".join(kept)


def is_stage_script(path: Path) -> bool:
    return path.parent.name == "stages"


@functools.lru_cache(maxsize=None)
def source_of(path: Path) -> str:
    """A source file as it was when this process first read it: an edit during a long run cannot label a
    result with code it did not run."""
    return path.read_text(encoding="utf-8")


def code_of(path: Path, skipped: frozenset[str] = frozenset(), cached: bool = True) -> str:
    """:func:`code_tokens` of a source file (a stage script without its SPEC), without the features
    ``skipped``; ``cached=False`` reads the disk now."""
    source = source_of(path) if cached else path.read_text(encoding="utf-8")
    return _code_tokens_without(source, skipped, is_stage_script(path))


@functools.lru_cache(maxsize=None)
def _code_tokens_without(source: str, skipped: frozenset[str], skip_spec: bool) -> str:
    return code_tokens(without_features(source, skipped), skip_spec=skip_spec)


def code_digest(cached: bool = True, features: frozenset[str] = frozenset()) -> str:
    """A hash of the code of :func:`numeric_code_files`, with their names, as a run using ``features``
    (of :data:`FEATURES`; by default none) executes it; ``cached=False`` reads the disk now."""
    skipped = frozenset(FEATURES) - features
    digest = hashlib.sha256()
    for path in numeric_code_files():
        if any(word in path.stem.lower() for word in skipped):
            continue
        digest.update(path.name.encode())
        digest.update(code_of(path, skipped, cached).encode())
    return digest.hexdigest()


DESCRIPTIVE = ("name", "title", "adds", "reproduces", "published_accuracy", "published_note")
"""Settings that describe a run and change none of its numbers: left out of its fingerprint, so the same
training under another name (an ablation's copy of a stage) is recognised as the same run."""


def fingerprint(spec: StageSpec, seed: int) -> str:
    """A hash of everything that determines a result: the settings that can change a number, the seed
    and the numeric code."""
    everything = spec.settings()
    features = features_used(everything)
    numeric = {key: value for key, value in everything.items()
               if key not in DESCRIPTIVE and not any(is_feature_setting(key, word) and word not in features
                                                     for word in FEATURES)}
    settings = json.dumps({"settings": numeric, "seed": seed}, sort_keys=True)
    return hashlib.sha256((settings + code_digest(features=features)).encode()).hexdigest()[:16]


def run_path(runs_dir: Path, key: str, seed: int) -> Path:
    """Where the result of (key, seed) is kept."""
    return runs_dir / key.replace("@", "_at_") / f"seed{seed}.json"


REQUIRED = {"test_accuracy": float, "train_accuracy": float, "seconds": float, "history": list}
"""What a finished run's record must hold, with its type (a failed run holds ``status`` and ``reason``)."""


def read_record(path: Path) -> tuple[dict | None, str]:
    """``(record, "")`` for a readable run record at ``path``, else ``(None, why not)``: a missing,
    truncated or foreign file, or a finished run without its accuracies or history."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "there is none"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"it is not readable JSON ({type(error).__name__})"
    if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
        return None, "it is not a run record (no fingerprint)"
    if record.get("status") == "ok":
        for key, kind in REQUIRED.items():
            value = record.get(key)
            if not isinstance(value, kind) or isinstance(value, bool) or (kind is float and not 0 <= value < 1e9):
                return None, f"its {key!r} is {'missing' if value is None else f'a {type(value).__name__}'}"
    elif record.get("status") != "failed":
        return None, "its status is neither ok nor failed"
    return record, ""


def saved_fingerprint(path: Path) -> str | None:
    """The fingerprint of the valid result saved at ``path``, or None if there is none."""
    record, _ = read_record(path)
    return record["fingerprint"] if record else None


def spec_of_record(record: dict) -> StageSpec:
    """The settings a run record holds, as the :class:`StageSpec` that ran them."""
    settings = dict(record["settings"])
    settings["sizes"] = tuple(settings["sizes"])
    if "layers" in settings:
        settings["layers"] = tuple(settings["layers"])
    return StageSpec(**settings)


def expected_fingerprint(record: dict) -> str:
    """The fingerprint today's code gives the settings and seed a run record holds."""
    return fingerprint(spec_of_record(record), record["seed"])


@dataclass
class Progress:
    """A study's overall progress: ``expected[i]`` is how long run ``i`` should take (0 if it will be
    reused, None if unknown: a run never made before is estimated as the mean of the known ones)."""

    expected: list[float | None]
    done: int = 0
    trained: int = 0
    started: float = field(default_factory=time.perf_counter)

    def line(self, trained_now: bool) -> str:
        """``[12/27 runs, 3 trained, 4.2 min so far, about 9 min left]`` after one more run."""
        self.done += 1
        self.trained += trained_now
        known = [seconds for seconds in self.expected if seconds]
        mean = sum(known) / len(known) if known else 0.0
        left = sum(mean if seconds is None else seconds for seconds in self.expected[self.done:])
        elapsed = (time.perf_counter() - self.started) / 60
        estimate = f", about {left / 60:.0f} min left" if left >= 30 else (", nearly done" if left else "")
        return (f"[{self.done}/{len(self.expected)} runs, {self.trained} trained, "
                f"{elapsed:.1f} min so far{estimate if self.done < len(self.expected) else ''}]")


def plan_progress(entries: Sequence[tuple[str, StageSpec, int]], runs_dir: Path, force: bool,
                  sources: Sequence[Path] = ()) -> Progress:
    """The :class:`Progress` of a study that will run ``entries`` (key, spec, seed) in order."""
    expected: list[float | None] = []
    for key, spec, seed in entries:
        stamp = fingerprint(spec, seed)
        records = [read_record(run_path(folder, key, seed))[0] for folder in (runs_dir, *sources)]
        if not force and any(record and record["fingerprint"] == stamp for record in records):
            expected.append(0.0)
            continue
        times = [record.get("seconds") for record in records if record and record.get("status") == "ok"]
        expected.append(times[0] if times else None)
    return Progress(expected)


def find_saved(key: str, seed: int, stamp: str, runs_dir: Path, sources: Sequence[Path]) -> tuple[dict | None, Path]:
    """The saved result of (key, seed) with fingerprint ``stamp``: in ``runs_dir`` first, then in each of
    ``sources`` (read only). Returns ``(record or None, where it is or would be saved)``."""
    path = run_path(runs_dir, key, seed)
    for candidate in (path, *(run_path(folder, key, seed) for folder in sources)):
        record, why = read_record(candidate)
        if record is not None and record["fingerprint"] == stamp:
            return record, candidate
        if record is None and candidate == path and why != "there is none":
            print(f"[{key} seed {seed}] the saved {shown(candidate)} is damaged ({why}); training it again", flush=True)
    return None, path


def run_or_resume(key: str, spec: StageSpec, seed: int, data, runs_dir: Path, force: bool, progress: bool,
                  sources: Sequence[Path] = (), tracker: Progress | None = None) -> dict:
    """Return the saved result for (key, seed) if its fingerprint matches, else train and save it.

    ``sources``: other folders of saved results to reuse from, never written (a study of your own
    reuses the committed results this way). ``tracker``: print the study's overall progress after
    the run. A run that fails is saved too, as ``{"status": "failed", "reason": ...}``: a bug or a
    divergence in one stage must not stop the others.
    """
    stamp = fingerprint(spec, seed)
    saved, path = (None, run_path(runs_dir, key, seed)) if force else find_saved(key, seed, stamp, runs_dir, sources)
    if saved is not None:
        print(f"[{key} seed {seed}] unchanged, reusing {shown(path)}", flush=True)
        if tracker is not None:
            print(tracker.line(trained_now=False), flush=True)
        return saved
    print(f"[{key} seed {seed}] training ...", flush=True)
    result = train_and_record(key, spec, seed, stamp, data, progress, models_dir_for(runs_dir))
    atomic_write_json(path, result)
    status = f"FAILED: {result['reason']}" if result["status"] != "ok" else (
        # a run with a validation split is there to choose a setting: show what the choice may look at
        f"validation {100 * result['val_accuracy']:.2f} %" if "val_accuracy" in result
        else f"test {100 * result['test_accuracy']:.2f} %") + f", {result.get('seconds', 0):.1f} s"
    print(f"[{key} seed {seed}] {status}" + (f" {tracker.line(trained_now=True)}" if tracker else ""), flush=True)
    return result


def model_metadata(trained: TrainedStage) -> dict:
    """What a saved model carries besides its weights: its stage, pixel scale and seed, the code that
    trained it, and the run's fingerprint (settings, seed and numeric code, as the run cache computes it),
    so a reader of the model (the robustness experiment) can tell whether it is today's."""
    return {"stage": trained.spec.name, "pixel_scale": trained.spec.pixel_scale, "seed": trained.seed,
            "implementation": trained.implementation, "fingerprint": fingerprint(trained.spec, trained.seed)}


def models_dir_for(runs_dir: Path) -> Path:
    """Where a study keeps its models: :data:`MODELS_DIR` for the repository's own studies, else a
    ``models`` folder beside its runs (a study written elsewhere, a test's, keeps everything there)."""
    try:
        runs_dir.resolve().relative_to(MODELS_DIR.parents[2].resolve())  # results/
        return MODELS_DIR
    except ValueError:
        return runs_dir.parent / "models"


def keep_model(trained: TrainedStage, metrics: dict, folder: Path) -> None:
    """Save a study's trained network in ``folder`` under its fingerprint, with its run's environment,
    test accuracy and time; a failure to save costs nothing but a later retraining."""
    metadata = {**model_metadata(trained), "environment": metrics.get("environment", describe_environment()),
                "test_accuracy": metrics["test_accuracy"], "seconds": metrics["seconds"]}
    try:
        save_network(folder / f"{metadata['fingerprint']}.npz", trained.network, metadata)
    except OSError as error:
        print(f"(the model was not kept in {shown(MODELS_DIR)}: {error.strerror or error})", flush=True)


def train_and_record(key: str, spec: StageSpec, seed: int, stamp: str, data, progress: bool,
                     models: Path | None = None) -> dict:
    """Train (key, seed) and return its record: the stage's metrics, or why it failed. The network is
    kept in ``models`` (:func:`keep_model`) if given."""
    try:
        trained = train_stage(spec, seed, data, progress)
        result = {"status": "ok", **stage_metrics(trained)}
        if models is not None:
            keep_model(trained, result, models)
    except UserError as error:
        result = {"status": "failed", "reason": str(error)}
    except Exception as error:  # keep the reason, go on with the other runs
        result = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
        traceback.print_exc()
    result.update({"key": key, "stage": spec.name, "seed": seed, "fingerprint": stamp, "settings": spec.settings()})
    result.pop("confusion_matrix", None)
    return result


class Runner:
    """run_or_resume, plus: a run whose fingerprint equals one already finished under another key (in this
    study, or in the folders ``shared_from``: the regularization ablation's "stage 05 as it is" is the
    comparison's stage 05, a tuning table's baseline another table's) is copied to its own key instead of
    trained again."""

    def __init__(self, data, runs_dir: Path, force: bool, progress: bool, sources: tuple[Path, ...] = (),
                 shared_from: tuple[Path, ...] = ()) -> None:
        self.data, self.runs_dir = data, runs_dir
        self.force, self.progress, self.sources = force, progress, sources
        self.tracker: Progress | None = None
        self.trained = self.reused = self.shared = 0
        code_digest()  # read the code now: the cached copy is what this process runs
        self.finished: dict[str, Path] = {}   # fingerprint -> a saved result with it
        for folder in shared_from:
            for path in sorted(folder.rglob("seed*.json")):
                record, _ = read_record(path)
                if record is not None and record["status"] == "ok":
                    self.finished.setdefault(record["fingerprint"], path)

    def check_code(self) -> None:
        """Stop if the numeric code changed on disk since this process first read it: a result trained
        now would be saved with the fingerprint of code it did not run."""
        if code_digest(cached=False) != code_digest():
            raise UserError("the numeric code (common/nn/ or common/protocol.py) changed while the study ran; the "
                            "results so far are saved: run the same command again to continue with the new code")

    def run(self, key: str, spec: StageSpec, seed: int) -> dict:
        self.check_code()
        stamp = fingerprint(spec, seed)
        path = run_path(self.runs_dir, key, seed)
        saved = saved_fingerprint(path) == stamp or any(
            saved_fingerprint(run_path(folder, key, seed)) == stamp for folder in self.sources)
        force = self.force
        if stamp in self.finished and self.finished[stamp] != path and (force or not saved):
            source = self.finished[stamp]
            result = json.loads(source.read_text())
            result["key"] = key
            atomic_write_json(path, result)
            print(f"[{key} seed {seed}] same settings as {shown(source.parent)}, sharing its result", flush=True)
            self.shared += 1
            force = False
        elif saved and not force:
            self.reused += 1
        else:
            self.trained += 1
        result = run_or_resume(key, spec, seed, self.data, self.runs_dir, force, self.progress, self.sources,
                               self.tracker)
        self.finished.setdefault(stamp, path)
        return result
