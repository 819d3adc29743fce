"""``python -m common.exercises start [DIR]`` / ``check [NAME ...] [--dir DIR]``: see :func:`common.exercises.main`."""
import sys

from common.cli import run_cli
from common.exercises import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
