"""Every ``python ...`` command the README shows is one the suite accepts as written.

Each command's options are parsed by the script's own parser (in this process, stopped right after the
parse, so nothing is trained or written): a renamed or removed option, a missing required one or a
script that moved makes this fail.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
NOT_OURS = ("-m pip", "-m venv", "-m pytest", "python3.10 -m pip")


def readme_commands() -> list[str]:
    """``python ...`` commands from the README's code blocks and inline code, comments and ``[...]`` dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        commands += [line.split("  #")[0].split(" # ")[0].strip() for line in block.splitlines()]
    for inline in re.findall(r"`(python [^`]+)`", README):
        # a provenance line lists the commands that made its runs: "CMD (27 runs), CMD (3 runs)"
        commands += [re.sub(r" \(\d+ runs?\)$", "", part) for part in re.split(r", (?=python )", inline)]
    cleaned = []
    for command in commands:
        command = re.sub(r"\s*\[[^\]]*\]", "", command).strip()
        if command.startswith("python ") and not any(part in command for part in NOT_OURS):
            cleaned.append(command)
    return sorted(set(cleaned))


class Parsed(BaseException):
    """Raised by the patched parser once the options are read: the command is accepted."""


def entry_point(words: list[str]):
    """``(main function, its argv)`` for ``python script.py ARGS`` or ``python -m module ARGS``."""
    if words[0] == "-m":
        module = importlib.import_module(words[1])
        return module.main, words[2:]
    path = REPO / words[0]
    assert path.is_file(), f"the README names {words[0]}, which does not exist"
    if path.parent.name == "experiments":
        module = importlib.import_module(f"experiments.{path.stem}")
    elif path.parent.name == "benchmarks":
        module = importlib.import_module(path.stem)  # the benchmarks import each other by name
    else:
        module = load_stage(path)
    if hasattr(module, "SPEC"):  # a stage script
        from common.runner import main as stage_main
        return (lambda argv: stage_main(module.SPEC, argv, module.__doc__)), words[1:]
    return module.main, words[1:]


def load_stage(path: Path):
    spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is being executed
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_the_commands_a_reader_needs():
    commands = readme_commands()
    for expected in ("python experiments/compare.py", "python experiments/tune.py", "python stages/04_adam.py",
                     "python -m common.predict", "python experiments/ablations.py"):
        assert any(command.startswith(expected) for command in commands), expected


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command, monkeypatch):
    words = shlex.split(command)[1:]
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    main, argv = entry_point(words)
    try:
        code = main(argv)
    except Parsed:
        return
    except SystemExit as stop:  # --help prints the help and exits 0
        assert stop.code == 0 and "--help" in words, f"`{command}`: exit {stop.code}"
        return
    pytest.fail(f"`{command}` was refused before or without reaching its parser (exit code {code})")
