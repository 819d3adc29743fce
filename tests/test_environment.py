"""Tests for common.environment.git_commit: the provenance label written next to every result."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from common.environment import git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("<!-- comparison:start -->old<!-- comparison:end -->\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("old\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return tmp_path


def test_clean_tree_gives_the_commit(repo):
    assert git_commit(repo) == git(repo, "rev-parse", "--short=12", "HEAD")


def test_regenerated_results_do_not_make_the_tree_dirty(repo):
    (repo / "results" / "table.md").write_text("new\n")
    (repo / "README.md").write_text("<!-- comparison:start -->new<!-- comparison:end -->\n")
    assert not git_commit(repo).endswith("+dirty")


def test_changed_code_makes_the_tree_dirty(repo):
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo).endswith("+dirty")


def test_outside_a_repository_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"
