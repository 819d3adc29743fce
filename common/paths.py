"""Where things live in the repository: the one definition of its root and its main folders."""
from __future__ import annotations

import sys
from pathlib import Path

from common.nn.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"
STAGES_DIR = REPO_ROOT / "stages"
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "mnist"
LOCAL_DIR = RESULTS_DIR / "local"
"""Where a user's own runs go (git-ignored): stage runs, ``--quick`` runs, partial comparisons, studies
and benchmarks run with other settings. The committed results are written only by the full runs the
result pages name, so trying things out never changes them."""

SCRIPT_FOLDERS = ("stages", "experiments", "benchmarks")


def shown(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (for messages and tables), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def check_checkout(script: str | None = None) -> None:
    """Refuse, in one line, a script of one checkout that imported the ``common`` package of another.

    That happens when two clones share one virtual environment, where ``pip install -e`` pointed the
    package at the first clone: the second clone's script would then read and write the first clone's
    ``results/``. ``script`` (default ``sys.argv[0]``) counts when it sits in a checkout's ``stages/``,
    ``experiments/`` or ``benchmarks/`` folder; anything else (``python -m``, the tests) is not checked.
    """
    path = Path(script if script is not None else (sys.argv[0] if sys.argv else ""))
    if path.suffix != ".py" or path.parent.name not in SCRIPT_FOLDERS:
        return
    checkout = path.resolve().parent.parent
    if not (checkout / "common" / "__init__.py").is_file() or checkout == REPO_ROOT:
        return
    raise UserError(f"{path.name} belongs to the checkout {checkout}, but the `common` package Python imported is "
                    f"the one in {REPO_ROOT}, so results would go there; install this checkout's package with "
                    f"`python -m pip install -e {checkout}` (or run the other checkout's script)")
