"""The layout a reader relies on: a numeric core on NumPy alone, stages that name their code,
no path hacks, short functions, and a README map of every module and folder."""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "common" / "nn"
STAGES = sorted((REPO / "stages").glob("[0-9][0-9]_*.py"))
SCRIPT_FOLDERS = ("common", "stages", "experiments", "benchmarks")
MAX_FUNCTION_LINES = 60


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (``from . import x`` counts as the package itself)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("common.nn" if node.level else node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_numeric_core_imports_numpy_the_standard_library_and_itself_only(path: Path):
    allowed_outside = {"numpy"}
    for name in imported_modules(path):
        top = name.split(".")[0]
        ok = (top in sys.stdlib_module_names or top in allowed_outside or top == "__future__"
              or name == "common.nn" or name.startswith("common.nn."))
        assert ok, f"{path.relative_to(REPO)} imports {name}: the core may use only NumPy, the standard library and common.nn"


def code_names(stage: Path) -> list[str]:
    docstring = ast.get_docstring(ast.parse(stage.read_text(encoding="utf-8"))) or ""
    lines = [line for line in docstring.splitlines() if line.startswith("Code:")]
    assert len(lines) == 1, f"{stage.name}: its docstring needs exactly one 'Code:' line"
    return [name.strip() for name in lines[0].removeprefix("Code:").split(",") if name.strip()]


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and follow the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("stage", STAGES, ids=lambda p: p.stem)
def test_every_stage_names_the_code_it_adds_and_every_name_resolves(stage: Path):
    names = code_names(stage)
    assert names, f"{stage.name}: the Code: line names nothing"
    for name in names:
        assert name.startswith("common."), name
        assert callable(resolve(name)), f"{stage.name}: {name} is not a function, method or class"


def test_resolve_fails_on_a_stale_name():
    with pytest.raises(AttributeError):
        resolve("common.nn.optimizers.Adam.no_such_method")


def test_no_script_edits_sys_path_or_silences_import_order():
    offenders = [f"{p.relative_to(REPO)}: {line.strip()}"
                 for p in python_files(*SCRIPT_FOLDERS)
                 for line in p.read_text(encoding="utf-8").splitlines()
                 if "sys.path" in line or "noqa: E402" in line]
    assert not offenders, offenders


def test_no_function_over_sixty_lines_outside_the_tests():
    long = []
    for path in python_files(*SCRIPT_FOLDERS):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, long


def readme_map() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Where each piece lives")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_map_names_every_module_and_folder():
    table = readme_map()
    named = set(re.findall(r"`([^`]+)`", table))
    expected = {f"{p.relative_to(REPO).as_posix()}" for p in python_files("common", "experiments", "benchmarks")
                if p.name != "__init__.py"}
    expected |= {"stages/", "docs/math.md", "tests/", "results/", "common/nn/"}
    missing = sorted(expected - named)
    assert not missing, f"README 'Where each piece lives' does not name: {missing}"


def test_a_stage_runs_from_another_working_directory(tmp_path: Path):
    """The suite is an installed package: no path set-up is needed wherever the script is started from."""
    done = subprocess.run([sys.executable, str(REPO / "stages" / "04_adam.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--epochs" in done.stdout


def test_run_fingerprint_ignores_prose_but_not_code():
    """Correcting a docstring or a comment keeps saved runs valid; changing code invalidates them."""
    from common.runs import code_tokens

    source = 'def f(x):\n    """Twice x."""\n    return 2 * x  # double\n'
    assert code_tokens(source) == code_tokens('def f(x):\n    """Two times x,\n    exactly."""\n\n    return 2 * x\n')
    assert code_tokens(source) != code_tokens('def f(x):\n    """Twice x."""\n    return 3 * x\n')
    assert code_tokens(source) != code_tokens('def f(x):\n    """Twice x."""\nreturn 2 * x\n'.replace("\nreturn", "\n    pass\nreturn"))


DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "docs" / "math.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_code_path_and_name_a_document_mentions_exists(doc: Path):
    """After a move, no page may send a reader to `common/train.py` or `common.train.train`."""
    text = doc.read_text(encoding="utf-8")
    for path in set(re.findall(r"`((?:common|stages|experiments|benchmarks)/[\w/]+\.py)`", text)):
        assert (REPO / path).is_file(), f"{doc.name} mentions {path}, which does not exist"
    for name in set(re.findall(r"`(common(?:\.\w+)+)`", text)):
        resolve(name)  # raises if the module or attribute is gone
