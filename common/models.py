"""Today's trained model of a stage and seed: found where the suite keeps them, else trained exactly as the
comparison trains it, and kept.

The experiments that measure trained networks (robustness, committees) ask for models by stage (or a
variant of one) and seed. A model is today's when its metadata carries the fingerprint today's code gives
its settings and seed (``common.runs.fingerprint``) and it was trained on the fast core. Where one is
looked for, in order: the committed stage output (``results/stages/<stage>/model.npz``, seed 0 of a
stage as it is), the studies' models kept by fingerprint (``results/local/models/by-fingerprint/``), and
this cache (``results/local/models/<key>/seed<s>/model.npz``); a model found nowhere is trained and kept
there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.environment import describe_environment
from common.nn.errors import UserError
from common.nn.network import Network
from common.paths import LOCAL_DIR, RESULTS_DIR, shown
from common.predict import load_model
from common.protocol import StageSpec, train_stage
from common.runs import Progress, fingerprint, model_metadata, models_dir_for
from common.serialize import save_network

IMPLEMENTATION = "fast core"
MODELS_CACHE = LOCAL_DIR / "models"          # <key>/seed<s>/model.npz, trained here
COMMITTED_MODELS = RESULTS_DIR / "stages"    # <stage>/model.npz: seed 0 of each stage, by its script


@dataclass(frozen=True)
class Entry:
    """One row of the study: a stage as it is (``variant`` None), or a variant of it."""

    key: str              # cache folder and CSV key: the stage's name, or the variant's key
    label: str            # its row in the table
    number: str           # the stage number
    spec: StageSpec
    variant: Any = None   # None: the stage as it is; else the study's description of the change

    @property
    def own(self) -> bool:
        """The stage's own spec (whose committed model can serve seed 0)."""
        return self.variant is None

    @property
    def convolutional(self) -> bool:
        return any(layer.startswith("conv") for layer in self.spec.layers)


@dataclass
class Model:
    """A trained network of one entry and seed, where it is kept and what is known of its training run."""

    entry: Entry
    seed: int
    network: Network
    path: Path
    metadata: dict        # the model file's: stage, pixel_scale, seed, implementation, fingerprint, ...
    run: dict             # its training run's "environment", "test_accuracy", "seconds", where known

    @property
    def pixel_scale(self) -> str:
        return self.metadata["pixel_scale"]


def cache_path(cache: Path, key: str, seed: int) -> Path:
    return cache / key / f"seed{seed}" / "model.npz"


def run_record(path: Path, metadata: dict) -> dict:
    """What is known of the run that trained the model at ``path``: from its metadata (a model trained
    here), else from the metrics.json a stage script writes beside its model in the same run."""
    source = metadata
    if "environment" not in metadata:
        try:
            source = json.loads((path.parent / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
    if not isinstance(source, dict):
        return {}
    return {name: source[name] for name in ("environment", "test_accuracy", "seconds") if name in source}


def open_model(path: Path, entry: Entry, seed: int, by_fingerprint: bool = False) -> tuple[Model | None, str]:
    """``(model, "")`` if ``path`` holds today's model of ``entry`` and ``seed``, else ``(None, why not)``.

    A model whose metadata names another stage is refused (:class:`UserError`): it was put in the wrong
    place. Not in the fingerprint cache (``by_fingerprint``), where a study's copy of a stage (an ablation
    variant) is the same model under another name, and the fingerprint alone says which model it is.
    """
    if not path.exists():
        return None, "there is none"
    try:
        network, metadata = load_model(path)
    except UserError as error:
        return None, f"it is not readable ({error})"
    named = metadata.get("stage")
    if named is not None and named != entry.spec.name and not by_fingerprint:
        raise UserError(f"{shown(path)} holds a model of stage {named}, not of {entry.spec.name}; "
                        "move it away or delete it, then run again")
    if metadata.get("fingerprint") != fingerprint(entry.spec, seed):
        return None, "its fingerprint is not today's" if "fingerprint" in metadata else "it has no fingerprint"
    if metadata.get("implementation") != IMPLEMENTATION:
        return None, f"it was trained on {metadata.get('implementation')}, not the {IMPLEMENTATION}"
    return Model(entry, seed, network, path, metadata, run_record(path, metadata)), ""


def find_model(entry: Entry, seed: int, cache: Path, committed: Path | None) -> tuple[Model | None, str]:
    """Today's model of ``entry`` and ``seed``: the committed one (seed 0 of a stage as it is), else the one
    a study (the comparison, the ablations) kept under its fingerprint, else this experiment's cache's.
    Returns ``(model or None, why none)``."""
    stamp = fingerprint(entry.spec, seed)
    places = [models_dir_for(cache) / f"{stamp}.npz", cache_path(cache, entry.key, seed)]
    if committed is not None and entry.own and seed == 0:
        places.insert(0, committed / entry.spec.name / "model.npz")
    reasons = []
    for path in places:
        model, why = open_model(path, entry, seed, by_fingerprint=path.parent == models_dir_for(cache))
        if model is not None:
            return model, ""
        if why != "there is none":
            reasons.append(f"{shown(path)}: {why}")
    return None, "; ".join(reasons) or f"none saved in {shown(places[-1].parent)}"


def train_model(entry: Entry, seed: int, data, path: Path, progress: bool) -> Model:
    """Train ``entry`` with ``seed`` (``common.protocol.train_stage``) and save it at ``path``, atomically,
    with ``common.runner.model_metadata`` and its run's environment, test accuracy and time."""
    trained = train_stage(entry.spec, seed, data, progress)
    predicted = trained.probabilities.argmax(axis=1)
    run = {"environment": describe_environment(),
           "test_accuracy": float(np.mean(predicted == trained.splits["test"].y)),
           "seconds": float(trained.history[-1].get("seconds", 0.0)) if trained.history else 0.0}
    metadata = {**model_metadata(trained), **run}
    save_network(path, trained.network, metadata)
    return Model(entry, seed, trained.network, path, metadata, run)


def gather_models(entries: list[Entry], seeds: list[int], data, cache: Path, committed: Path | None,
                  train: bool = True, progress: bool = True) -> dict[str, list[Model]]:
    """Every entry's models, one per seed (``{entry key: [model of each seed]}``): today's saved ones,
    the others trained and saved into ``cache``, one line per model with the overall progress.
    Without ``train``, an entry missing any of its models is left out, with a line saying so."""
    found = {(entry.key, seed): find_model(entry, seed, cache, committed) for entry in entries for seed in seeds}
    kept = []
    for entry in entries:
        missing = [seed for seed in seeds if found[entry.key, seed][0] is None]
        if missing and not train:
            print(f"{entry.label}: no model of today's code for seed {', '.join(map(str, missing))} "
                  f"({found[entry.key, missing[0]][1]}); left out (--no-train)", flush=True)
        else:
            kept.append(entry)
    tracker = Progress([0.0 if found[e.key, s][0] else None for e in kept for s in seeds])
    models: dict[str, list[Model]] = {}
    for entry in kept:
        for seed in seeds:
            model, why = found[entry.key, seed]
            name = f"[{entry.label} seed {seed}]"
            if model is not None:
                print(f"{name} today's model: {shown(model.path)} {tracker.line(trained_now=False)}", flush=True)
            else:
                print(f"{name} no model of today's code ({why}); training it", flush=True)
                model = train_model(entry, seed, data, cache_path(cache, entry.key, seed), progress)
                tracker.expected[tracker.done] = model.run["seconds"]  # the estimate of the rest learns from it
                print(f"{name} trained: test {100 * model.run['test_accuracy']:.2f} %, {model.run['seconds']:.0f} s, "
                      f"saved as {shown(model.path)} {tracker.line(trained_now=True)}", flush=True)
            models.setdefault(entry.key, []).append(model)
    return models
