"""Where things live in the repository: the one definition of its root and its main folders."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"
STAGES_DIR = REPO_ROOT / "stages"
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "mnist"
