"""Predict your own digit: read a photo or drawing, make it look like MNIST, ask a trained network.

Command line::

    python -m common.predict my_digit.png [--model results/stages/04_adam/model.npz]
                                          [--show-input seen.png]

prints ``predicted: D`` as the first line, then the three most likely classes with their
probabilities. ``--show-input`` saves the 28 x 28 image exactly as the network sees it. Without
``--model`` the newest trained stage is used: the first of ``results/stages/07_batchnorm/model.npz``,
``06_conv/model.npz``, ``05_regularized/model.npz`` and ``04_adam/model.npz`` that exists.

Why preprocessing matters: a network trained on MNIST has only ever seen digits prepared one
way (LeCun et al., 1998): white ink on black, the digit scaled with anti-aliasing so that its
bounding box is 20 pixels on its longer side (aspect ratio kept), then placed in a 28 x 28 field
so that its centre of mass sits at the centre. The same digit, shifted by a few pixels or drawn
black on white, is a completely different input vector to a fully connected network.
:func:`preprocess_image` repeats those steps on any grayscale image:

1. polarity: the outer frame of the image is taken as background; if the image is on average
   darker than its frame the ink is dark (pen on paper) and the image is inverted;
2. the background level is subtracted and the ink stretched to [0, 1]; faint background
   (below :data:`NOISE_THRESHOLD` of the ink contrast: paper texture, shading, JPEG noise) is
   removed; an image with no contrast at all is rejected as blank;
3. the image is cropped to the bounding box of the ink and resized (Lanczos, anti-aliased) so
   that its longer side is :data:`BOX` = 20 pixels;
4. the crop is pasted into a black 28 x 28 field so that its centre of mass lands on
   :data:`CENTRE` = 14.0 in row/column index coordinates (0..27), where the real MNIST digits
   have theirs (mean 13.99 / 14.00 over the test set), shifted by whole pixels.

:func:`load_image` reads PNG/JPEG/... of any size and mode (RGB, RGBA and palette images with
transparency composited onto white, L, 16-bit, CMYK, LAB by its lightness, ...) into a float
``(H, W)`` array in [0, 1]; :func:`decode_image` does the same for an image in memory (the
playground's canvas). Both need Pillow; without it they say how to install it
(:func:`require_pillow`).
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import IO, Sequence

import numpy as np

from common.cli import OneLineParser, run_cli, writable_folder
from common.files import atomic_open
from common.idx import IMAGE_SIDE
from common.nn.errors import UserError
from common.paths import RESULTS_DIR, shown
from common.protocol import PIXEL_SCALES, scale_pixels

DEFAULT_MODELS = (
    RESULTS_DIR / "stages" / "07_batchnorm" / "model.npz",
    RESULTS_DIR / "stages" / "06_conv" / "model.npz",
    RESULTS_DIR / "stages" / "05_regularized" / "model.npz",
    RESULTS_DIR / "stages" / "04_adam" / "model.npz",
)

BOX = 20
"""Longer side of the digit's bounding box after scaling, as in MNIST."""
CENTRE = 14.0
"""Target centre of mass (row and column, index coordinates 0..27), as measured on MNIST."""
NOISE_THRESHOLD = 0.2
"""Ink below this fraction of the full ink contrast is treated as background and removed."""
BLANK_CONTRAST = 0.08
"""An image whose ink differs from its background by less than this (on a 0..1 scale) is blank."""
TOP_K = 3
PILLOW_INSTALL = "python -m pip install pillow"


class MissingPackage(UserError):
    """A package the suite needs is not installed; the message names it and how to install it."""


def require_pillow(purpose: str) -> None:
    """Raise :class:`MissingPackage` (one line, with the install command) if Pillow cannot be imported.

    Pillow comes with matplotlib, so it is nearly always there; when matplotlib comes from
    elsewhere (a system package) it may not be, and ``purpose`` says what needs it.
    """
    try:
        for module in ("PIL", "PIL.Image", "PIL.ImageOps"):  # what decode_image and _resize import
            importlib.import_module(module)
    except ImportError:
        raise MissingPackage(f"{purpose} needs the package Pillow, which is not installed; "
                             f"install it with: {PILLOW_INSTALL}") from None


# --------------------------------------------------------------------------- reading

def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (PNG, JPEG, anything Pillow reads) as grayscale float32 ``(H, W)`` in [0, 1].

    Transparent pixels (RGBA, LA, palette with transparency) are composited onto white, the
    usual look of a drawing with a transparent background. 16-bit and 32-bit grayscale are
    scaled by their full range. The EXIF orientation of phone photos is applied.
    Raises :class:`UserError` (one line) if the file is missing, not an image, or damaged.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"image file {path} does not exist")
    if not path.is_file():
        raise UserError(f"{path} is not a file; give the path of a PNG or JPEG image")
    return decode_image(path, str(path))


def decode_image(source: str | os.PathLike | IO[bytes], name: str, formats: Sequence[str] | None = None,
                 max_pixels: int | None = None) -> np.ndarray:
    """Decode an image (a path or a binary file object) as :func:`load_image` does: float32 ``(H, W)``.

    ``name`` starts every error message; ``formats`` limits what Pillow tries (e.g. ``("PNG",)``),
    ``max_pixels`` refuses larger images before they are decoded (else Pillow's own bomb limit).
    Raises :class:`UserError` (one line) for data that is not an image, damaged, or too large.
    """
    require_pillow("reading images")
    from PIL import Image, ImageOps, UnidentifiedImageError

    too_large = f"{name} is too large to be a digit drawing; resize it first"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as opened:
                if max_pixels is not None and opened.width * opened.height > max_pixels:
                    raise UserError(f"{too_large} (at most {max_pixels:,} pixels)")
                opened.load()  # decode now, so a truncated file fails here
                image = ImageOps.exif_transpose(opened)
    except UnidentifiedImageError:
        raise UserError(f"{name} is not an image Pillow can read (expected PNG or JPEG)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(too_large) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated / corrupt data
        raise UserError(f"{name} is damaged or truncated and cannot be decoded ({error})") from None
    gray = _to_gray(image, name)
    invalid = int(np.count_nonzero(~np.isfinite(gray)))
    if invalid:
        raise UserError(f"{name} has {invalid} invalid pixel{'s' if invalid > 1 else ''} (NaN or infinite); "
                        "save the drawing again as an 8-bit PNG")
    return gray


def _to_gray(image, name: str) -> np.ndarray:
    """A Pillow image of any mode -> float32 ``(H, W)`` in [0, 1], transparency over white.

    LAB images give their lightness band; a mode Pillow cannot turn into greyscale is a one-line
    :class:`UserError` starting with ``name``.
    """
    try:
        return _gray_pixels(_plain_mode(image))
    except (ValueError, OSError, TypeError) as error:  # Pillow: "conversion from X to Y not supported"
        raise UserError(f"{name}: cannot turn an image of mode {image.mode} into greyscale ({error}); "
                        "save it as an 8-bit PNG") from None


def _plain_mode(image):
    """The image in a mode :func:`_gray_pixels` reads: LAB as its lightness ``L`` band, premultiplied
    alpha (``La``, ``RGBa``) undone, palettes expanded, transparency composited onto white."""
    from PIL import Image

    if image.mode == "LAB":
        return image.getchannel("L")  # L*, 0..100 scaled to 0..255: LAB's own greyscale
    if image.mode in ("La", "RGBa"):
        image = image.convert(image.mode[:-1] + "A")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image


def _gray_pixels(image) -> np.ndarray:
    """A Pillow image without transparency -> float32 ``(H, W)`` in [0, 1]: 16- and 32-bit modes
    by their range, any other through Pillow's greyscale (``L``), via RGB where it has no direct way."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            full = 65535.0
        else:  # 32-bit int or float: 0..1, 0..255 or 0..65535, whichever the values fit
            peak = float(pixels.max()) if pixels.size else 0.0
            full = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
        return np.clip(pixels / full, 0.0, 1.0).astype(np.float32)
    try:
        gray = image.convert("L")
    except ValueError:
        gray = image.convert("RGB").convert("L")
    return np.asarray(gray, dtype=np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- preprocessing

def _frame(image: np.ndarray) -> np.ndarray:
    """The pixels of the outer frame (5 % of the shorter side, at least one pixel), flattened."""
    height, width = image.shape
    k = max(1, min(height, width) // 20)
    if 2 * k >= height or 2 * k >= width:
        return image.ravel()
    return np.concatenate([image[:k].ravel(), image[-k:].ravel(),
                           image[k:-k, :k].ravel(), image[k:-k, -k:].ravel()])


def _resize(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float ``(h, w)`` to ``size = (height, width)`` with Pillow's anti-aliased Lanczos."""
    require_pillow("preparing images")
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(crop, dtype=np.float32)).resize(  # mode "F"
        (size[1], size[0]), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted ``(row, column)`` of a non-negative ``(H, W)`` image, index coordinates."""
    total = float(image.sum())
    if total <= 0:
        raise ValueError("centre of mass of an empty image")
    rows = np.arange(image.shape[0], dtype=np.float64)
    cols = np.arange(image.shape[1], dtype=np.float64)
    return (float(image.sum(axis=1) @ rows) / total, float(image.sum(axis=0) @ cols) / total)


def preprocess_image(image: np.ndarray) -> np.ndarray:
    """Turn a grayscale ``(H, W)`` float image in [0, 1] into an MNIST-like uint8 ``(784,)``.

    Steps (see the module docstring): automatic polarity (ink becomes bright on black),
    background removal and contrast stretch, light noise threshold, crop to the ink, resize to a
    20-pixel longer side keeping the aspect ratio, paste into 28 x 28 with the centre of mass at
    (14, 14). Returns the pixels row-major, 0-255, like the MNIST bytes.
    Raises :class:`UserError` "no digit found: the image is blank" if there is no ink.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D grayscale image, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise UserError("the image has invalid pixels (NaN or infinite)")
    image = np.clip(image, 0.0, 1.0)

    # 1. polarity: the frame is background; darker on average than the frame -> dark ink
    background = float(np.median(_frame(image)))
    mean = float(image.mean())
    dark_ink = mean < background if abs(mean - background) > 1e-6 else background > 0.5
    if dark_ink:
        image, background = 1.0 - image, 1.0 - background

    # 2. background to 0, ink to 1, faint background noise removed
    ink = np.clip(image - background, 0.0, None)
    contrast = float(ink.max())
    if contrast < BLANK_CONTRAST:
        raise UserError("no digit found: the image is blank")
    ink /= contrast
    ink = np.clip((ink - NOISE_THRESHOLD) / (1.0 - NOISE_THRESHOLD), 0.0, 1.0)

    # 3. crop to the ink, scale the longer side to BOX pixels
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, min(BOX, round(height * scale))), max(1, min(BOX, round(width * scale))))
    small = _resize(crop, size)
    if small.max() <= 0:  # a speck that vanished in resizing: keep it visible
        small = np.ones(size, dtype=np.float32)
    small /= small.max()  # MNIST strokes reach full intensity; thin strokes stay visible

    # 4. centre of mass to (CENTRE, CENTRE), by whole pixels, staying inside the field
    com_row, com_col = centre_of_mass(small)
    top = int(np.clip(round(CENTRE - com_row), 0, IMAGE_SIDE - size[0]))
    left = int(np.clip(round(CENTRE - com_col), 0, IMAGE_SIDE - size[1]))
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    field[top:top + size[0], left:left + size[1]] = small
    return np.rint(field * 255.0).astype(np.uint8).ravel()


# --------------------------------------------------------------------------- model and CLI

def default_model() -> Path:
    """The first of ``results/stages/07_batchnorm``, ``06_conv``, ``05_regularized`` and ``04_adam``'s ``model.npz``
    that exists."""
    for candidate in DEFAULT_MODELS:
        if candidate.is_file():
            return candidate
    raise UserError(f"no trained model found (none of {', '.join(shown(path) for path in DEFAULT_MODELS)} "
                    f"exists); train one with `python stages/07_batchnorm.py` (or 06_conv.py, 05_regularized.py, 04_adam.py) "
                    f"or pass --model PATH")


def load_model(path: str | os.PathLike):
    """``(network, metadata)`` of a saved model that takes 784 pixels and gives 10 classes."""
    from common.serialize import load_network

    network, metadata = load_network(path)
    sizes = list(network.architecture.sizes) if network.architecture is not None else []
    if not sizes or sizes[0] != IMAGE_SIDE * IMAGE_SIDE:
        raise UserError(f"{path}: the model takes {sizes[0] if sizes else '?'} inputs, not the "
                        f"{IMAGE_SIDE * IMAGE_SIDE} pixels of a 28x28 digit")
    if sizes[-1] != 10:
        raise UserError(f"{path}: the model has {sizes[-1]} outputs, not the 10 digit classes")
    if metadata.get("pixel_scale") not in PIXEL_SCALES:
        raise UserError(f"{path}: the model does not record its pixel scale ({' or '.join(PIXEL_SCALES)}); re-train it")
    return network, metadata


def predict_image(image: np.ndarray, network, metadata: dict) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess and classify one grayscale image ``(H, W)`` in [0, 1].

    Returns ``(pixels uint8 (784,), probabilities (10,))``; the pixels are scaled for the network
    as it was trained (``metadata["pixel_scale"]``: "unit" -> [0, 1], "raw" -> 0..255).
    """
    pixels = preprocess_image(image)
    return pixels, classify(pixels, network, metadata["pixel_scale"])


def classify(pixels: np.ndarray, network, pixel_scale: str) -> np.ndarray:
    """The probabilities ``(10,)`` a network gives a prepared digit ``pixels`` uint8 ``(784,)``,
    scaled as that network was trained (``pixel_scale``: "unit" -> [0, 1], "raw" -> 0..255)."""
    x = scale_pixels(pixels[None, :], pixel_scale)  # (1, 784) float32
    return network.predict_proba(x)[0]


def format_prediction(probabilities: np.ndarray, top: int = TOP_K) -> list[str]:
    """``["predicted: D", "  D  97.31 %", ...]`` for ``probabilities (10,)``, best first."""
    order = np.argsort(-probabilities, kind="stable")[:top]
    return [f"predicted: {int(order[0])}"] + [f"  {int(k)}  {100.0 * float(probabilities[k]):5.2f} %"
                                              for k in order]


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m common.predict",
                            description="Predict the digit in your own image (PNG or JPEG) with a trained network.")
    parser.add_argument("image", help="the image file: a digit, dark on light or light on dark, any size")
    parser.add_argument("--model", default=None,
                        help="a model.npz saved by a stage (default: the first of results/stages/07_batchnorm, "
                             "06_conv, 05_regularized and 04_adam's model.npz that exists)")
    parser.add_argument("--show-input", metavar="PATH", default=None,
                        help="save a PNG of the 28x28 input as the network sees it")
    args = parser.parse_args(argv)
    require_pillow("python -m common.predict (to read your image)")
    if args.show_input:
        if Path(args.show_input).suffix.lower() != ".png":
            raise UserError(f"--show-input {args.show_input}: the picture is a PNG; give a name ending in .png")
        writable_folder(Path(args.show_input).parent, "--show-input")

    image = load_image(args.image)  # (H, W) in [0, 1]; file problems are reported first
    network, metadata = load_model(Path(args.model) if args.model else default_model())
    pixels, probabilities = predict_image(image, network, metadata)
    lines = format_prediction(probabilities)
    print("\n".join(lines), flush=True)
    if args.show_input:
        try:
            written = save_input(pixels, Path(args.show_input))
        except OSError as error:
            raise UserError(f"cannot write {args.show_input}: {error.strerror or error}") from None
        print(f"input as the network sees it (28x28, white ink on black as in MNIST): {written}")
    return 0


def save_input(pixels: np.ndarray, path: Path) -> Path:
    """Write ``pixels (784,)`` in [0, 1] as the 28x28 greyscale PNG the network sees (atomically): one
    pixel per input, 0 black, 1 white, nothing added around it."""
    from PIL import Image

    image = Image.fromarray(np.clip(np.round(255 * pixels.reshape(28, 28)), 0, 255).astype(np.uint8), mode="L")
    with atomic_open(path) as file:
        image.save(file, format="PNG")
    return path


if __name__ == "__main__":
    sys.exit(run_cli(main))
