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


def imported_modules(path: Path, with_names: bool = False) -> set[str]:
    """Every module ``path`` imports (``from . import x`` counts as the package itself); ``with_names``
    adds ``m.x`` for each ``from m import x``, in case ``x`` is a module."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "common.nn" if node.level else node.module
            names.add(module)
            if with_names:
                names.update(f"{module}.{alias.name}" for alias in node.names)
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



def test_run_fingerprint_is_the_same_on_every_python():
    """Python 3.12 tokenizes an f-string in parts (PEP 701); the fingerprint keeps each f-string whole, as
    its source text, so runs saved under one supported Python are valid under another. The expected
    string is what Python 3.10 and 3.11 give."""
    from common.runs import code_tokens

    source = 'x = f"a{b!r:>{w}}c" + f"""d\n{e}"""  # note\nif x:\n    y = f"{x}"\n'
    assert code_tokens(source) == 'x = f"a{b!r:>{w}}c" + f"""d\n{e}""" \n if x : \n INDENT y = f"{x}" \n DEDENT '
    assert code_tokens(source.replace("{w}", "{v}")) != code_tokens(source)


DOCS = [REPO / "README.md", REPO / "benchmarks" / "README.md", REPO / "docs" / "math.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_code_path_and_name_a_document_mentions_exists(doc: Path):
    """After a move, no page may send a reader to `common/train.py` or `common.train.train`."""
    text = doc.read_text(encoding="utf-8")
    for path in set(re.findall(r"`((?:common|stages|experiments|benchmarks)/[\w/]+\.py)`", text)):
        assert (REPO / path).is_file(), f"{doc.name} mentions {path}, which does not exist"
    for name in set(re.findall(r"`(common(?:\.\w+)+)`", text)):
        resolve(name)  # raises if the module or attribute is gone


def test_importing_the_suite_changes_nothing_in_the_process_environment():
    """No import side effects: ``os.environ`` is the same after importing every module of the suite."""
    script = ("import os; before = dict(os.environ)\n"
              "import common, common.nn, common.nn.network, common.nn.train, common.protocol, common.runner, "
              "common.blas, common.robustness, common.predict\n"
              "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENBLAS")})
    assert done.returncode == 0, done.stderr


def test_the_blas_setting_is_an_explicit_call_that_leaves_the_environment_alone():
    """``common.blas.configure()`` makes the loaded OpenBLAS rest its threads after 2**20 cycles, without
    touching ``os.environ``; before the call OpenBLAS runs with its default. An OpenBLAS that keeps the
    needed functions private (NumPy 2.5's) is left alone: the call says so by returning False."""
    script = ("import os; before = dict(os.environ)\n"
              "from common import blas\n"
              "if not blas.loaded_openblas(): print('no openblas'); raise SystemExit\n"
              "if blas.thread_timeout() is None:\n"
              "    assert blas.configure() is False and blas.thread_timeout() is None\n"
              "    assert dict(os.environ) == before; print('private'); raise SystemExit\n"
              "assert blas.thread_timeout() == 0, blas.thread_timeout()\n"
              "assert blas.configure() and blas.thread_timeout() == blas.THREAD_TIMEOUT\n"
              "import numpy as np; a = np.ones((300, 300), np.float32); assert (a @ a)[0, 0] == 300\n"
              "assert dict(os.environ) == before\n"
              "print('ok')\n")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OPENBLAS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    import numpy as np
    private_allowed = tuple(map(int, np.__version__.split(".")[:2])) >= (2, 5)
    assert done.stdout.strip() in ("ok", "no openblas") + (("private",) if private_allowed else ())


def test_no_import_is_kept_for_its_side_effect():
    """No ``import x  # noqa`` lines: a module is imported for what it defines, never for what importing it does."""
    offenders = [f"{p.relative_to(REPO)}: {line.strip()}"
                 for p in python_files(*SCRIPT_FOLDERS)
                 for line in p.read_text(encoding="utf-8").splitlines()
                 if re.match(r"\s*(import|from)\s", line) and "noqa" in line]
    assert not offenders, offenders


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = relative.parts[1:] if relative.parts[0] == "benchmarks" else relative.parts  # benchmarks import by name
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_circular_imports_anywhere():
    """The import graph of common/, experiments/ and benchmarks/ (imports inside functions included:
    a cycle hidden by deferring an import is still a cycle) has no cycle."""
    files = python_files("common", "experiments", "benchmarks")
    names = {module_name(path): path for path in files}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        targets = set()
        for imported in imported_modules(path, with_names=True):
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                raise AssertionError(" -> ".join(trail[trail.index(target):] + [target]) if target in trail
                                     else f"{node} -> {target}")
            if target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_the_core_speaks_of_networks_not_of_the_command_line(path: Path):
    """No option names, scripts or stages in the numeric core's messages, docstrings or comments: the
    callers (the stage runner, the experiments) add the hint that names their own options."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"(?<![\w-])--[a-z][\w-]*|\bstages?/\S+|\bstage \d\d\b|\brun_cli\b", text)
    assert not found, f"{path.relative_to(REPO)}: {found}"


def test_a_script_of_another_checkout_refuses_to_write_into_this_one(tmp_path: Path):
    """Two clones, one virtual environment: the second clone's script must not silently use (and write
    the results of) the first clone's ``common`` package."""
    other = tmp_path / "other-clone"
    (other / "stages").mkdir(parents=True)
    (other / "common").mkdir()
    (other / "common" / "__init__.py").write_text("")
    (other / "stages" / "04_adam.py").write_text((REPO / "stages" / "04_adam.py").read_text(encoding="utf-8"))
    done = subprocess.run([sys.executable, str(other / "stages" / "04_adam.py"), "--quick"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "belongs to the checkout" in done.stderr and str(other) in done.stderr and "pip install -e" in done.stderr


def test_a_stage_scripts_settings_are_fingerprinted_as_settings_not_as_code():
    """Changing a stage's SPEC (after tuning, say) leaves the code part of the fingerprint alone (the
    settings themselves are in it), so runs that tried other values stay valid; other code still counts."""
    from common.runs import code_tokens

    script = 'import sys\nSPEC = StageSpec(name="x", lr=0.1)\nif __name__ == "__main__":\n    sys.exit(main(SPEC))\n'
    other_spec = script.replace("lr=0.1", "lr=0.3")
    assert code_tokens(script, skip_spec=True) == code_tokens(other_spec, skip_spec=True)
    assert code_tokens(script) != code_tokens(other_spec)
    assert code_tokens(script, skip_spec=True) != code_tokens(script.replace("main(SPEC)", "main(SPEC, [])"), skip_spec=True)
