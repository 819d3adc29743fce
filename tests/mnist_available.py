"""``needs_mnist``: skip a test that reads the real MNIST when it is not in the default data folder
(``python -m common.data fetch`` puts it there; CI always fetches it first)."""
from __future__ import annotations

import pytest

from common.data import find_idx_file, resolve_data_dir
from common.idx import FILE_NAMES


def have_mnist() -> bool:
    """True if all four MNIST files are in the default data folder."""
    try:
        directory = resolve_data_dir(None)
        return all(find_idx_file(directory, name) is not None for name in FILE_NAMES)
    except Exception:
        return False


needs_mnist = pytest.mark.skipif(not have_mnist(),
                                 reason="MNIST is not in the default data folder (python -m common.data fetch)")
