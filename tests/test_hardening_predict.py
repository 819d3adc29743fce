"""Images in every mode Pillow reads, and the suite without Pillow: ``python -m common.predict`` and
the figures (common.plots) answer with one line, never a traceback."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common import predict
from common.nn.errors import UserError
from common.nn.network import Network
from common.serialize import save_network

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL = "python -m pip install pillow"
ALL_MODES = sorted(set(getattr(Image, "MODES", [])) | {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX",
                                                       "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16L",
                                                       "I;16B", "I;16N", "F"})


def digit(mode: str = "L", side: int = 60) -> Image.Image:
    """A bright vertical stroke on black, in ``mode`` (converted from L where Pillow can)."""
    image = Image.new("L", (side, side), 0)
    ImageDraw.Draw(image).line([(side // 2, side // 6), (side // 2, 5 * side // 6)], fill=255, width=side // 10)
    if mode == "LAB":
        return Image.merge("LAB", (image, Image.new("L", image.size, 128), Image.new("L", image.size, 128)))
    return image.convert(mode)


def model(tmp_path: Path) -> Path:
    return save_network(tmp_path / "model.npz", Network.from_sizes([784, 16, 10], np.random.default_rng(0)),
                        {"pixel_scale": "unit"})


def run(*args: str | Path, env: dict[str, str] | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "common.predict"]
    return subprocess.run([*command, *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=env)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: ")
    return done.stderr


# ---------------------------------------------------------------------------- every mode

@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_becomes_grey_or_one_line(mode: str):
    """Each mode Pillow knows: a float32 (H, W) image in [0, 1], or a one-line UserError."""
    try:
        image = digit(mode)
    except (ValueError, OSError):
        try:
            image = Image.new(mode, (60, 60))
        except (ValueError, OSError):
            pytest.skip(f"this Pillow makes no {mode} image")
    try:
        gray = predict._to_gray(image, "drawing")
    except UserError as error:
        assert "\n" not in str(error) and "drawing" in str(error)
        return
    assert gray.shape == (60, 60) and gray.dtype == np.float32
    assert np.isfinite(gray).all() and 0.0 <= gray.min() and gray.max() <= 1.0


@pytest.mark.parametrize("mode", ALL_MODES)
def test_every_mode_that_saves_as_tiff_decodes(mode: str):
    buffer = io.BytesIO()
    try:
        digit(mode).save(buffer, "TIFF")
    except (ValueError, OSError, KeyError):
        pytest.skip(f"Pillow does not write {mode} as TIFF")
    buffer.seek(0)
    try:
        gray = predict.decode_image(buffer, "digit.tif")
    except UserError as error:
        assert "\n" not in str(error) and "digit.tif" in str(error)
        return
    assert gray.shape == (60, 60) and gray.dtype == np.float32 and 0.0 <= gray.min() and gray.max() <= 1.0


def test_a_lab_tiff_is_read_by_its_lightness(tmp_path: Path):
    """LAB's L band is its greyscale: the stroke is bright, the background dark, as drawn."""
    path = tmp_path / "digit.tif"
    digit("LAB").save(path)
    assert Image.open(path).mode == "LAB"
    gray = predict.load_image(path)
    assert gray.max() == pytest.approx(1.0) and gray.min() == pytest.approx(0.0)
    assert np.array_equal(gray > 0.5, np.asarray(digit("L")) > 127)


def test_predict_reads_a_lab_tiff(tmp_path: Path):
    path = tmp_path / "digit.tif"
    digit("LAB").save(path)
    done = run(path, "--model", model(tmp_path))
    assert done.returncode == 0 and done.stdout.startswith("predicted: "), done.stderr


# ---------------------------------------------------------------------------- without Pillow

def without_pillow(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import PIL (a ``sitecustomize`` sets it to None)."""
    site = tmp_path / "no_pillow"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys; sys.modules['PIL'] = None\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}


def test_the_environment_really_has_no_pillow(tmp_path: Path):
    done = run(code="import PIL", env=without_pillow(tmp_path))
    assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr


def test_predict_without_pillow_says_how_to_install_it(tmp_path: Path):
    image = tmp_path / "digit.png"
    digit().save(image)
    line = one_error_line(run(image, "--model", model(tmp_path), env=without_pillow(tmp_path)))
    assert "Pillow" in line and INSTALL in line


def test_a_figure_without_pillow_says_how_to_install_it(tmp_path: Path):
    code = ("import sys\nimport numpy as np\nfrom common import plots\nfrom common.cli import run_cli\n"
            "sys.exit(run_cli(lambda argv: plots.plot_digit(np.zeros(784, np.uint8), argv[0]) and 0, sys.argv[1:]))")
    line = one_error_line(run(tmp_path / "digit.png", code=code, env=without_pillow(tmp_path)))
    assert "Pillow" in line and INSTALL in line
    assert not (tmp_path / "digit.png").exists()


def test_the_figures_module_imports_without_pillow(tmp_path: Path):
    """Importing common.plots costs nothing and fails nothing: the error comes with the first figure."""
    done = run(code="import common.plots", env=without_pillow(tmp_path))
    assert done.returncode == 0, done.stderr
