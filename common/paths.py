"""Where things live in the repository: the one definition of its root and its main folders."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "results"
STAGES_DIR = REPO_ROOT / "stages"
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "mnist"


def shown(path: Path) -> str:
    """``path`` relative to the repository root when it is inside it (for messages and tables), else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)
