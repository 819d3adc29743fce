"""Tests for common.predict: MNIST-style preprocessing of your own image, and the CLI end to end.

Centre-of-mass convention: row/column index coordinates (0..27), where real MNIST digits have
their centre of mass at (14.0, 14.0) on average; preprocess_image puts it within half a pixel.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common import predict
from common.nn.errors import UserError
from common.predict import centre_of_mass, load_image, preprocess_image

REPO_ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- helpers


def run_predict(*args: str | Path) -> subprocess.CompletedProcess:
    """``python -m common.predict ARGS`` from the repository root."""
    return subprocess.run([sys.executable, "-m", "common.predict", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def ink_box(pixels: np.ndarray) -> tuple[int, int]:
    """Height and width of the bounding box of the non-zero pixels of a (784,) or (28, 28) image."""
    image = pixels.reshape(28, 28)
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def synthetic_digit() -> np.ndarray:
    """A bright "7" on black, off-centre in a 180 x 140 canvas: float (180, 140) in [0, 1]."""
    canvas = Image.new("L", (140, 180), 0)
    draw = ImageDraw.Draw(canvas)
    draw.line([(20, 30), (80, 30)], fill=255, width=9)   # top bar
    draw.line([(80, 30), (45, 120)], fill=255, width=9)  # diagonal
    return np.asarray(canvas, dtype=np.float32) / 255.0


def assert_mnist_like(pixels: np.ndarray) -> None:
    """uint8 (784,), bright ink on black, 20-pixel box, centre of mass at (14, 14) +- 0.5 pixel."""
    assert pixels.shape == (784,) and pixels.dtype == np.uint8
    image = pixels.reshape(28, 28)
    assert image.max() == 255
    assert np.median(image) == 0 and (image > 0).mean() < 0.4, "bright ink on a black background"
    assert max(ink_box(pixels)) == 20
    row, col = centre_of_mass(image.astype(np.float64))
    assert abs(row - 14.0) <= 0.55 and abs(col - 14.0) <= 0.55


# ----------------------------------------------------------------------------------- preprocess


def test_preprocess_light_on_dark_is_mnist_like():
    pixels = preprocess_image(synthetic_digit())
    assert_mnist_like(pixels)
    height, width = ink_box(pixels)
    assert height == 20 and 11 <= width <= 15, "aspect ratio kept (the 7 is taller than wide)"


def test_preprocess_dark_on_light_gives_the_same_digit():
    bright = preprocess_image(synthetic_digit())
    # pen on grey paper: background 0.85, ink 0.1, a little noise
    paper = 0.85 - 0.75 * synthetic_digit() + np.random.default_rng(0).normal(0, 0.015, (180, 140))
    dark = preprocess_image(np.clip(paper, 0, 1).astype(np.float32))
    assert_mnist_like(dark)
    diff = np.abs(bright.astype(int) - dark.astype(int))
    assert diff.mean() < 6 and np.corrcoef(bright, dark)[0, 1] > 0.97


def test_preprocess_keeps_a_real_mnist_digit(mnist):
    """An MNIST digit is already preprocessed: doing it again changes it only a little."""
    for image in mnist.test_images[:20]:
        again = preprocess_image(image.reshape(28, 28) / 255.0)
        assert_mnist_like(again)
        assert np.corrcoef(image, again)[0, 1] > 0.9


def test_preprocess_wide_digit_and_tiny_image():
    wide = np.zeros((60, 200), np.float32)
    wide[25:35, 10:190] = 1.0  # a dash: 180 wide, 10 high
    pixels = preprocess_image(wide)
    height, width = ink_box(pixels)
    assert width == 20 and height <= 2
    assert_mnist_like(pixels)
    tiny = np.ones((12, 10), np.float32)  # a small dark "+" on white, upscaled to the 20-pixel box
    tiny[2:10, 4:6] = 0.0
    tiny[5:7, 1:9] = 0.0
    pixels = preprocess_image(tiny)
    assert_mnist_like(pixels)
    assert ink_box(pixels) == (20, 20)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_preprocess_blank_image_raises(value: float):
    noisy = value + np.random.default_rng(1).normal(0, 0.01, (64, 64))
    with pytest.raises(UserError, match="no digit found: the image is blank"):
        preprocess_image(np.clip(noisy, 0, 1))


# ----------------------------------------------------------------------------------- load_image


def test_load_image_reads_every_mode_alike(tmp_path: Path):
    """L, RGB, palette, 16-bit, RGBA and LA with transparency over white: the same gray image."""
    ink = (synthetic_digit() * 255).astype(np.uint8)  # bright on black
    gray = 255 - ink                                   # black on white
    images = {
        "l.png": Image.fromarray(gray),
        "rgb.png": Image.fromarray(np.stack([gray] * 3, axis=-1)),
        "p.png": Image.fromarray(np.stack([gray] * 3, axis=-1)).convert("P", palette=Image.Palette.ADAPTIVE),
        "i16.png": Image.fromarray(gray.astype(np.uint16) * 257),
        "rgba.png": Image.fromarray(np.dstack([np.zeros_like(ink)] * 3 + [ink]), "RGBA"),
        "la.png": Image.fromarray(np.dstack([np.zeros_like(ink), ink]), "LA"),
        "jpeg.jpg": Image.fromarray(gray),
    }
    expected = gray / 255.0
    for name, image in images.items():
        image.save(tmp_path / name)
        loaded = load_image(tmp_path / name)
        assert loaded.shape == gray.shape and loaded.dtype == np.float32, name
        assert 0.0 <= loaded.min() and loaded.max() <= 1.0, name
        tolerance = 0.05 if name.endswith(".jpg") else 0.01
        assert np.abs(loaded - expected).mean() < tolerance, name
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")


# ----------------------------------------------------------------------------------- real digits

MNIST_TRAIN_SECONDS_HINT = "a [784, 64, 10] network, Adam 1e-3, 2 epochs: ~3 s, ~96 % test accuracy"


@pytest.fixture(scope="module")
def mnist():
    from common.data import load_mnist

    return load_mnist(progress=False)


@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory):
    """(model path, test probabilities (10000, 10)) of a small network trained here on real MNIST."""
    from common.nn.network import Network
    from common.nn.optimizers import Adam
    from common.nn.train import train
    from common.protocol import scale_pixels
    from common.serialize import save_network

    rng = np.random.default_rng(0)
    network = Network.from_sizes([784, 64, 10], rng)
    train(network, Adam(1e-3), scale_pixels(mnist.train_images, "unit"), mnist.train_labels,
          epochs=2, rng=rng, batch_size=64, progress=False)
    probabilities = network.predict_proba(scale_pixels(mnist.test_images, "unit"))
    accuracy = float((probabilities.argmax(axis=1) == mnist.test_labels).mean())
    assert accuracy > 0.95, f"{MNIST_TRAIN_SECONDS_HINT}; got {accuracy:.4f}"
    path = save_network(tmp_path_factory.mktemp("model") / "model.npz", network,
                        {"pixel_scale": "unit", "stage": "test"})
    return path, probabilities


def photo_of(digit: np.ndarray, seed: int) -> np.ndarray:
    """An MNIST digit as if drawn with a pen on paper and photographed: uint8 (280, 320).

    Upscaled to 200 x 200, dark grey ink on light grey paper, off-centre, with sensor noise.
    """
    big = np.asarray(Image.fromarray(digit.reshape(28, 28)).resize((200, 200), Image.Resampling.BICUBIC),
                     dtype=np.float64) / 255.0
    paper, ink = 232.0, 35.0
    page = np.full((280, 320), paper)
    page[60:260, 30:230] -= big * (paper - ink)
    page += np.random.default_rng(seed).normal(0.0, 4.0, page.shape)
    return np.clip(np.rint(page), 0, 255).astype(np.uint8)


def transparent_drawing_of(digit: np.ndarray) -> Image.Image:
    """An MNIST digit as a dark-blue drawing on a transparent 300 x 300 RGBA canvas, off-centre."""
    alpha = np.zeros((300, 300), np.uint8)
    alpha[20:220, 80:280] = np.asarray(Image.fromarray(digit.reshape(28, 28)).resize(
        (200, 200), Image.Resampling.BICUBIC))
    rgba = np.zeros((300, 300, 4), np.uint8)
    rgba[..., 2] = 120
    rgba[..., 3] = alpha
    return Image.fromarray(rgba, "RGBA")


@pytest.mark.slow
def test_drawn_mnist_digits_are_recognised(mnist, trained, tmp_path: Path):
    """One test digit per class, each drawn dark on light, off-centre, as PNG, JPEG or RGBA PNG.

    The digits are the first test images of each class that the network gets right with at
    least 95 % in raw MNIST form; all ten must still be right after the round trip through a
    200 x 200 drawing and the CLI's preprocessing.
    """
    model, probabilities = trained
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    labels = mnist.test_labels
    chosen = [int(np.flatnonzero((labels == c) & (predicted == c) & (confidence >= 0.95))[0]) for c in range(10)]
    formats = ("png", "jpg", "rgba.png")
    for k, index in enumerate(chosen):
        digit, label = mnist.test_images[index], int(labels[index])
        kind = formats[k % 3]
        path = tmp_path / f"test{index}_{label}.{kind}"
        if kind == "rgba.png":
            transparent_drawing_of(digit).save(path)
        elif kind == "jpg":
            Image.fromarray(photo_of(digit, index)).save(path, quality=80)
        else:
            Image.fromarray(photo_of(digit, index)).save(path)
        result = run_predict(path, "--model", model)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"predicted: {label}", f"{path.name}: {result.stdout}"
        assert len(lines) == 4 and lines[1].split()[0] == str(label)
        probs = [float(line.split()[1]) for line in lines[1:]]
        assert probs == sorted(probs, reverse=True) and 0 <= probs[-1] and probs[0] <= 100


@pytest.mark.slow
@pytest.mark.parametrize("digit", [0, 1])
def test_hand_drawn_digit(trained, tmp_path: Path, digit: int):
    """A thick "1" (a slanted line) or "0" (an ellipse) drawn with ImageDraw, black on white."""
    model, _ = trained
    canvas = Image.new("L", (240, 300), 255)
    draw = ImageDraw.Draw(canvas)
    if digit == 1:
        draw.line([(130, 40), (118, 260)], fill=20, width=22)
    else:
        draw.ellipse([(60, 50), (190, 260)], outline=20, width=20)
    path = tmp_path / f"hand_{digit}.png"
    canvas.convert("RGB").save(path)
    result = run_predict(path, "--model", model)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"predicted: {digit}"


@pytest.mark.slow
def test_show_input_writes_the_digit_the_network_sees(mnist, trained, tmp_path: Path):
    model, _ = trained
    image = tmp_path / "seven.png"
    Image.fromarray(photo_of(mnist.test_images[0], 0)).save(image)
    figure = tmp_path / "out" / "seen.png"
    result = run_predict(image, "--model", model, "--show-input", figure)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "predicted: 7"
    assert figure.read_bytes()[:8] == PNG_SIGNATURE
    seen = Image.open(figure)
    assert seen.size == (28, 28) and seen.mode == "L", "the 28x28 input itself, not a figure around it"
    from common.predict import load_image, predict_image
    from common.serialize import load_network
    network, metadata = load_network(model)
    pixels, _ = predict_image(load_image(str(image)), network, metadata)
    np.testing.assert_array_equal(np.asarray(seen), np.round(255 * pixels.reshape(28, 28)).astype(np.uint8))


# ----------------------------------------------------------------------------------- errors


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "predicted" not in result.stdout


@pytest.fixture
def white_model(tmp_path: Path) -> Path:
    """An untrained (but valid) 784-16-10 model: enough for the error paths."""
    from common.nn.network import Network
    from common.serialize import save_network

    return save_network(tmp_path / "untrained.npz", Network.from_sizes([784, 16, 10], np.random.default_rng(0)),
                        {"pixel_scale": "unit", "stage": "test"})


@pytest.fixture
def digit_png(tmp_path: Path) -> Path:
    path = tmp_path / "digit.png"
    Image.fromarray((255 - synthetic_digit() * 255).astype(np.uint8)).save(path)
    return path


def test_error_missing_image(white_model: Path, tmp_path: Path):
    assert_one_line_error(run_predict(tmp_path / "nope.png", "--model", white_model), "nope.png", "does not exist")


def test_error_text_file_named_png(white_model: Path, tmp_path: Path):
    fake = tmp_path / "fake.png"
    fake.write_text("this is not an image\n")
    assert_one_line_error(run_predict(fake, "--model", white_model), "fake.png", "not an image")


def test_error_truncated_png(white_model: Path, digit_png: Path, tmp_path: Path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(digit_png.read_bytes()[:300])
    assert_one_line_error(run_predict(truncated, "--model", white_model), "truncated.png")


def test_error_blank_image(white_model: Path, tmp_path: Path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (255, 255, 255)).save(blank)
    assert_one_line_error(run_predict(blank, "--model", white_model), "no digit found: the image is blank")


def test_error_missing_model(digit_png: Path, tmp_path: Path):
    assert_one_line_error(run_predict(digit_png, "--model", tmp_path / "none.npz"), "none.npz")


def test_error_not_a_model_and_wrong_input_size(digit_png: Path, tmp_path: Path):
    from common.nn.network import Network
    from common.serialize import save_network

    text = tmp_path / "model.npz"
    text.write_text("not a model")
    assert_one_line_error(run_predict(digit_png, "--model", text), "model.npz")
    small = save_network(tmp_path / "small.npz", Network.from_sizes([100, 10], np.random.default_rng(0)),
                         {"pixel_scale": "unit"})
    assert_one_line_error(run_predict(digit_png, "--model", small), "100 inputs", "784")


def test_default_model_missing_says_what_to_train(monkeypatch: pytest.MonkeyPatch, digit_png: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture):
    from common.cli import run_cli

    monkeypatch.setattr(predict, "DEFAULT_MODELS", (tmp_path / "a" / "model.npz", tmp_path / "b" / "model.npz"))
    assert run_cli(predict.main, [str(digit_png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no trained model found")
    assert "06_conv.py" in err[0] and "04_adam" in err[0] and "--model" in err[0]


def test_default_model_prefers_regularized(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, white_model: Path):
    regularized, adam = tmp_path / "05" / "model.npz", tmp_path / "04" / "model.npz"
    monkeypatch.setattr(predict, "DEFAULT_MODELS", (regularized, adam))
    adam.parent.mkdir()
    adam.write_bytes(white_model.read_bytes())
    assert predict.default_model() == adam
    regularized.parent.mkdir()
    regularized.write_bytes(white_model.read_bytes())
    assert predict.default_model() == regularized


def test_error_nan_pixels_are_invalid_not_blank(white_model: Path, tmp_path: Path):
    """A float (mode F) TIFF with one NaN pixel is not "blank": it has invalid pixels."""
    pixels = synthetic_digit().astype(np.float32)
    pixels[3, 4] = np.nan
    image = tmp_path / "float.tiff"
    Image.fromarray(pixels, mode="F").save(image)
    assert_one_line_error(run_predict(image, "--model", white_model), "float.tiff", "1 invalid pixel", "NaN")


def test_error_show_input_must_be_a_png_in_a_writable_folder(white_model: Path, digit_png: Path, tmp_path: Path):
    """Both are refused before anything is predicted, so no PNG bytes end up under a .jpg name."""
    assert_one_line_error(run_predict(digit_png, "--model", white_model, "--show-input", tmp_path / "seen.jpg"),
                          "seen.jpg", ".png")
    assert not (tmp_path / "seen.jpg").exists()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert_one_line_error(run_predict(digit_png, "--model", white_model, "--show-input", a_file / "seen.png"),
                          "--show-input", "is a file")


def test_error_model_with_unknown_pixel_scale(digit_png: Path, tmp_path: Path):
    from common.nn.network import Network
    from common.serialize import save_network

    model = save_network(tmp_path / "odd.npz", Network.from_sizes([784, 16, 10], np.random.default_rng(0)),
                         {"pixel_scale": "percent"})
    assert_one_line_error(run_predict(digit_png, "--model", model), "odd.npz", "pixel scale")


def test_a_convolutional_model_predicts_a_drawn_digit(mnist, tmp_path: Path):
    """A small conv net (described as layers, saved in format 2), trained here for one epoch on
    10,000 real images, recognises test digits drawn dark on light through `python -m common.predict`."""
    from common.nn.architecture import Architecture
    from common.nn.network import Network
    from common.nn.optimizers import Adam
    from common.nn.train import train
    from common.protocol import scale_pixels
    from common.serialize import save_network

    rng = np.random.default_rng(0)
    layers = ("reshape 28x28x1", "conv 8 5x5 valid", "relu", "maxpool", "flatten", "dense 10")
    network = Network.from_architecture(Architecture((784, 10), layers=layers), rng)
    train(network, Adam(1e-3), scale_pixels(mnist.train_images[:10_000], "unit"), mnist.train_labels[:10_000],
          epochs=1, rng=rng, batch_size=64, progress=False)
    model = save_network(tmp_path / "conv.npz", network, {"pixel_scale": "unit", "stage": "test"})
    probabilities = network.predict_proba(scale_pixels(mnist.test_images, "unit"))
    for label in (3, 7):
        sure = np.flatnonzero((mnist.test_labels == label) & (probabilities[:, label] > 0.95))[0]
        image = tmp_path / f"digit{label}.png"
        Image.fromarray(255 - mnist.test_images[sure].reshape(28, 28)).save(image)
        done = run_predict(image, "--model", model)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == f"predicted: {label}"
