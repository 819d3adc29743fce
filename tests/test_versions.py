"""The version floors we declare are the ones CI pins and tests, and the README says the same."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def padded(version: str) -> tuple[int, ...]:
    parts = tuple(int(part) for part in version.split("."))
    return parts + (0,) * (3 - len(parts))


def declared_floors() -> dict[str, str]:
    """``{package: floor}`` from pyproject.toml's dependencies and test extra."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = text[text.index("[project]"):]  # not the build system's setuptools
    return {name.lower(): floor for name, floor in re.findall(r'"([A-Za-z0-9_-]+)>=([0-9.]+)"', text)}


def pinned_minimums() -> dict[str, str]:
    text = (ROOT / "requirements-min.txt").read_text(encoding="utf-8")
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_-]+)==([0-9.]+)\s*$", text, re.M)}


def test_every_floor_is_pinned_exactly_in_requirements_min():
    floors, pins = declared_floors(), pinned_minimums()
    assert set(floors) == {"numpy", "matplotlib", "pandas", "tabulate", "pillow", "pytest"}
    assert set(pins) == set(floors)
    for name, floor in floors.items():
        assert padded(pins[name]) == padded(floor), f"{name}: declared >={floor}, CI pins {pins[name]}"


def test_readme_names_the_tested_versions():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Python 3.10 to 3.13" in readme
    for name, version in pinned_minimums().items():
        shown = {"numpy": "NumPy", "pillow": "Pillow"}.get(name, name)
        assert f"{shown} {version}" in readme, f"README does not name {shown} {version}"


def test_ci_runs_both_environments():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "-c \"$ROOT/requirements-min.txt\"" in script and "find_python 10" in script
    assert "requirements-dev.txt" in script and "ruff" in script
