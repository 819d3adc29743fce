"""Find and import the numbered stage scripts in ``stages/`` (``01_one_hidden_gd.py``, ...).

Their names start with digits, so they are loaded by path; each defines ``SPEC``. A new numbered
file joins every experiment without editing the runners.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from common.nn.errors import UserError
from common.paths import STAGES_DIR
from common.protocol import StageSpec

STAGE_FILE = re.compile(r"^(\d\d)_[a-z0-9_]+\.py$")


def stage_files(stages_dir: Path = STAGES_DIR) -> dict[str, Path]:
    """``{"01": Path(".../01_one_hidden_gd.py"), ...}`` in numeric order."""
    found = {}
    for path in sorted(stages_dir.glob("*.py")):
        match = STAGE_FILE.match(path.name)
        if match:
            found[match.group(1)] = path
    return found


def load_module(path: Path) -> ModuleType:
    """Import a stage script by path, checking that it defines ``SPEC``."""
    module_spec = importlib.util.spec_from_file_location(f"stage_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not isinstance(getattr(module, "SPEC", None), StageSpec):
        raise UserError(f"{path} does not define SPEC = StageSpec(...)")
    return module


def load_spec(path: Path) -> StageSpec:
    """Import a stage script by path and return its ``SPEC``."""
    return load_module(path).SPEC


def layer_choices(number: str) -> dict[str, tuple[str, ...]]:
    """The networks ``experiments/tune.py --layers`` may try for a stage, by name: ``"stage"`` (its
    ``SPEC.layers``) and those of the script's optional ``LAYER_CHOICES`` dict."""
    path = stage_files().get(number)
    if path is None:
        raise UserError(f"no stage {number} in stages/; there are {', '.join(stage_files())}")
    module = load_module(path)
    return {"stage": tuple(module.SPEC.layers), **getattr(module, "LAYER_CHOICES", {})}


def load_specs(selection: list[str] | None = None) -> dict[str, StageSpec]:
    """The specs of the chosen stage numbers (all when ``selection`` is None), by number."""
    files = stage_files()
    if selection:
        unknown = [number for number in selection if number not in files]
        if unknown:
            raise UserError(f"no stage {', '.join(unknown)} in stages/; there are {', '.join(files)}")
        files = {number: files[number] for number in selection}
    return {number: load_spec(path) for number, path in files.items()}
