"""common.nn.elastic: Simard-style elastic distortions, checked pixel by pixel and against a plain loop."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.data import MNIST
from common.nn.affine import random_affine
from common.nn.elastic import displace, elastic_fields, gaussian_matrix, random_elastic, sample_bilinear, smooth_fields
from common.nn.errors import UserError
from common.protocol import train_stage, validate_spec
from common.runs import features_used, fingerprint
from common.stages import load_specs


def digits(batch: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((batch, 28 * 28)).astype(np.float32)


def test_the_kernel_is_a_normalised_gaussian_cut_at_four_sigma():
    matrix = gaussian_matrix(40, 2.0)
    assert np.allclose(matrix, matrix.T)
    assert matrix[20].sum() == pytest.approx(1.0)  # a row far from the border holds the whole kernel
    assert matrix[0].sum() < 0.6  # at the border half of it falls outside the image (zeros there)
    assert matrix[20, 28] > 0 and matrix[20, 29] == 0  # 4 sigma = 8 pixels
    assert matrix[20, 21] / matrix[20, 20] == pytest.approx(np.exp(-1 / 8))


def test_smoothing_a_single_spike_spreads_it_as_the_kernel():
    raw = np.zeros((1, 28, 28))
    raw[0, 14, 10] = 1.0
    smooth = smooth_fields(raw, 1.5)
    kernel = gaussian_matrix(28, 1.5)
    assert np.allclose(smooth[0], np.outer(kernel[:, 14], kernel[:, 10]))
    assert smooth.sum() == pytest.approx(1.0)


def test_zero_displacement_returns_the_images():
    images = digits()
    assert np.array_equal(displace(images, np.zeros((5, 2, 28, 28), np.float32)), images)


def test_a_constant_whole_pixel_displacement_is_a_shift():
    images = digits()
    fields = np.zeros((5, 2, 28, 28), np.float32)
    fields[:, 0] = 2.0  # every output pixel reads 2 columns to its right: the digit moves 2 pixels left
    fields[:, 1] = -1.0  # and 1 row above: it moves 1 pixel down
    moved = displace(images, fields).reshape(5, 28, 28)
    square = images.reshape(5, 28, 28)
    assert np.allclose(moved[:, 1:, :-2], square[:, :-1, 2:])
    assert np.all(moved[:, 0, :] == 0) and np.all(moved[:, :, -2:] == 0)


def test_a_half_pixel_displacement_averages_two_neighbours():
    images = digits()
    fields = np.zeros((5, 2, 28, 28), np.float32)
    fields[:, 0] = 0.5
    out = displace(images, fields).reshape(5, 28, 28)
    square = images.reshape(5, 28, 28)
    assert np.allclose(out[:, :, :-1], (square[:, :, :-1] + square[:, :, 1:]) / 2)


def test_sampling_equals_a_plain_loop_over_pixels():
    images, rng = digits(3), np.random.default_rng(1)
    xs, ys = rng.uniform(-2, 30, (2, 3, 28, 28)).astype(np.float32)
    padded = np.pad(images.reshape(3, 28, 28), ((0, 0), (1, 1), (1, 1)))  # 0 outside

    def read(b, x, y):
        x, y = min(max(x, -1), 28), min(max(y, -1), 28)
        x0, y0 = min(int(np.floor(x)), 27), min(int(np.floor(y)), 27)
        fx, fy = x - x0, y - y0
        at = lambda r, c: padded[b, r + 1, c + 1]  # noqa: E731
        return ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
                + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))

    expected = np.array([[read(b, xs[b, r, c], ys[b, r, c]) for r in range(28) for c in range(28)] for b in range(3)])
    assert np.allclose(sample_bilinear(images, xs, ys), expected, atol=1e-5)


def test_fields_scale_with_alpha_and_are_smooth():
    fields = elastic_fields(np.random.default_rng(0), 64, 28, 34.0, 4.0)
    assert fields.shape == (64, 2, 28, 28) and fields.dtype == np.float32
    twice = elastic_fields(np.random.default_rng(0), 64, 28, 68.0, 4.0)
    assert np.allclose(twice, 2 * fields, atol=1e-5)
    assert abs(fields.mean()) < 0.1 and 0.5 < fields.std() < 3  # pixels: strokes wobble, digits stay digits
    step = np.abs(np.diff(fields, axis=-1)).mean()
    assert step < 0.2 * np.abs(fields).mean()  # neighbours move almost together
    rough = elastic_fields(np.random.default_rng(0), 64, 28, 34.0, 0.5)
    assert np.abs(np.diff(rough, axis=-1)).mean() > 3 * step


def test_each_image_has_its_own_field_and_the_stream_decides():
    images = np.repeat(digits(1), 4, axis=0)
    out = random_elastic(images, np.random.default_rng(5), 34.0, 4.0)
    assert out.dtype == np.float32 and out.shape == images.shape
    assert not np.allclose(out[0], out[1])
    assert np.array_equal(out, random_elastic(images, np.random.default_rng(5), 34.0, 4.0))
    fields = elastic_fields(np.random.default_rng(5), 4, 28, 34.0, 4.0)
    assert np.array_equal(out, displace(images, fields))


def test_bad_shapes_and_settings_are_refused():
    with pytest.raises(ValueError, match="fields of shape"):
        displace(digits(2), np.zeros((2, 2, 27, 27), np.float32))
    with pytest.raises(ValueError, match="sigma must be above 0"):
        gaussian_matrix(28, 0.0)
    (spec,) = load_specs(["07"]).values()
    for alpha, sigma in ((34.0, 0.0), (0.0, 4.0), (-1.0, 4.0), (500.0, 4.0)):
        with pytest.raises(UserError, match="elastic distortions need"):
            validate_spec(dataclasses.replace(spec, elastic_alpha=alpha, elastic_sigma=sigma))


def test_elastic_runs_are_their_own_feature():
    (spec,) = load_specs(["07"]).values()
    elastic = dataclasses.replace(spec, elastic_alpha=34.0, elastic_sigma=4.0)
    assert features_used(elastic.settings()) == {"batchnorm", "affine", "recalibrate", "elastic"}
    assert features_used(spec.settings()) == {"batchnorm", "affine", "recalibrate"}
    assert fingerprint(elastic, 0) != fingerprint(spec, 0)
    assert "elastic_alpha" in spec.settings()  # a run without them records them as 0; its fingerprint leaves them out
    assert fingerprint(spec, 0) == fingerprint(dataclasses.replace(spec, elastic_alpha=0.0, elastic_sigma=0.0), 0)


def test_training_composes_the_affine_map_then_the_elastic_field(monkeypatch):
    """A tiny stage-07 run with both distortions sees, in each batch, random_affine then random_elastic."""
    import common.protocol as protocol

    calls = []
    monkeypatch.setattr(protocol, "random_affine", lambda x, *a: calls.append("affine") or random_affine(x, *a))
    monkeypatch.setattr(protocol, "random_elastic", lambda x, *a: calls.append("elastic") or random_elastic(x, *a))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 784), dtype=np.uint8)
    data = MNIST(images[:200], rng.integers(0, 10, 200), images[200:], rng.integers(0, 10, 100))
    (spec,) = load_specs(["07"]).values()
    tiny = dataclasses.replace(spec, epochs=1, batch_size=100, elastic_alpha=34.0, elastic_sigma=4.0,
                               layers=("reshape 28x28x1", "conv 4 5x5 valid", "maxpool", "batchnorm", "relu",
                                       "flatten", "dense 10"))
    trained = train_stage(tiny, 0, data, progress=False)
    assert calls == ["affine", "elastic"] * 2
    assert np.isfinite(trained.probabilities).all()


def test_the_stage_figure_distorts_as_training_does():
    """common.runner draws augmentation.png with the stage's own distortions, in training's order."""
    from common.nn.augment import random_shift
    from common.runner import distorted, distortions_text

    (spec,) = load_specs(["07"]).values()
    images = digits(4)
    elastic = dataclasses.replace(spec, elastic_alpha=34.0, elastic_sigma=4.0)
    expected_rng, rng = np.random.default_rng(3), np.random.default_rng(3)
    expected = random_elastic(random_affine(images, expected_rng, 10.0, 0.1, 10.0, 2), expected_rng, 34.0, 4.0)
    assert np.array_equal(distorted(elastic, images, rng), expected)
    shifted_only = dataclasses.replace(elastic, affine_rotation=0.0, affine_scale=0.0, affine_shear=0.0)
    expected_rng, rng = np.random.default_rng(3), np.random.default_rng(3)
    expected = random_elastic(random_shift(images, expected_rng, 2), expected_rng, 34.0, 4.0)
    assert np.array_equal(distorted(shifted_only, images, rng), expected)
    assert distortions_text(elastic) == ("rotation up to 10°, scale 1 ± 0.1, shear up to 10°, shift up to 2 px; "
                                         "elastic alpha 34, sigma 4 px")
    assert distortions_text(shifted_only) == "shift up to 2 px; elastic alpha 34, sigma 4 px"
