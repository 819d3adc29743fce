"""Run fingerprints and features (common.runs.FEATURES): a run is fingerprinted with the code it can execute,
so the code only batch normalization or the affine distortions run is in their runs' fingerprints and out
of everyone else's (the trace in test_results_reproduce.py proves the others never execute it)."""
from __future__ import annotations

import dataclasses
import shutil

import pytest

from common import runs
from common.runs import code_tokens, features_used, without_features
from common.stages import load_specs

WITH = '''
import numpy as np
from common.nn.batchnorm import BatchNorm
LIMIT = 3
LIMIT_FOR_BATCHNORM = 4


class Kit:
    dense: int
    batchnorm: int = 0


def build(kind, layers):
    if kind == "dense":
        layers.append(1)
    elif kind == "batchnorm":  # only batch-normalized networks get here
        layers.append(BatchNorm(3))
        layers.append(2)
    elif kind == "relu":
        layers.append(3)
    else:
        layers.append(4)
    if any(getattr(layer, "batchnorm", False) for layer in layers):
        layers.reverse()
    return layers
'''
WITHOUT = '''
import numpy as np
LIMIT = 3


class Kit:
    dense: int


def build(kind, layers):
    if kind == "dense":
        layers.append(1)
    elif kind == "relu":
        layers.append(3)
    else:
        layers.append(4)
    return layers
'''


def test_leaving_a_feature_out_gives_the_code_as_it_was_before_the_feature():
    assert code_tokens(without_features(WITH, frozenset({"batchnorm"}))) == code_tokens(WITHOUT)
    assert code_tokens(without_features(WITH, frozenset({"affine"}))) == code_tokens(WITH)


@pytest.mark.parametrize("source, message", [
    ("def f(layers):\n    layers.append('batchnorm')\n    return layers\n", "runs for every run"),
    ("def f(kind):\n    if kind == 'batchnorm':\n        return 1\n    else:\n        return 2\n", "must stand alone"),
])
def test_feature_code_that_every_run_would_execute_is_refused(source, message):
    with pytest.raises(ValueError, match=message):
        without_features(source, frozenset({"batchnorm"}))


def test_which_features_a_run_uses():
    specs = load_specs(["06", "07"])
    assert features_used(specs["06"].settings()) == frozenset()
    assert features_used(specs["07"].settings()) == {"batchnorm", "affine", "recalibrate"}
    no_affine = dataclasses.replace(specs["07"], affine_rotation=0.0, affine_scale=0.0, affine_shear=0.0)
    assert features_used(no_affine.settings()) == {"batchnorm", "recalibrate"}


def test_a_features_code_is_in_its_runs_fingerprints_only(tmp_path, monkeypatch):
    for path in runs.numeric_code_files():
        name = path.relative_to(runs.CODE_ROOT)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / name)
    monkeypatch.setattr(runs, "CODE_ROOT", tmp_path)
    specs = load_specs(["06", "07"])
    no_affine = dataclasses.replace(specs["07"], affine_rotation=0.0, affine_scale=0.0, affine_shear=0.0)
    before = {key: runs.fingerprint(spec, 0) for key, spec in (*specs.items(), ("bn", no_affine))}
    with open(tmp_path / "common" / "nn" / "batchnorm.py", "a", encoding="utf-8") as file:
        file.write("\nEDITED = True\n")
    runs.source_of.cache_clear()
    after_batchnorm = {key: runs.fingerprint(spec, 0) for key, spec in (*specs.items(), ("bn", no_affine))}
    assert after_batchnorm["06"] == before["06"]
    assert after_batchnorm["07"] != before["07"] and after_batchnorm["bn"] != before["bn"]
    with open(tmp_path / "common" / "nn" / "affine.py", "a", encoding="utf-8") as file:
        file.write("\nEDITED = True\n")
    runs.source_of.cache_clear()
    after_affine = {key: runs.fingerprint(spec, 0) for key, spec in (*specs.items(), ("bn", no_affine))}
    assert after_affine["06"] == before["06"] and after_affine["bn"] == after_batchnorm["bn"]
    assert after_affine["07"] != after_batchnorm["07"]
    with open(tmp_path / "common" / "nn" / "layers.py", "a", encoding="utf-8") as file:
        file.write("\nEDITED = True\n")
    runs.source_of.cache_clear()
    assert all(runs.fingerprint(spec, 0) != after_affine[key]
               for key, spec in (*specs.items(), ("bn", no_affine))), "shared code is in every fingerprint"
    runs.source_of.cache_clear()
