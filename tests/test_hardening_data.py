"""Data sets that are not what they claim: no test (or training) images, a small gzip whose header
claims millions of images, and a --data-dir that is a file. Each is one line, found before the
data is decompressed into memory."""
from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common import idx
from common.data import check_files, fetch_mnist, load_mnist
from common.idx import FILE_NAMES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, DataError

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_RSS_MB = 300
"""What checking or loading a small data set may cost, Python and NumPy included."""
needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")


def write_split(directory: Path, images_name: str, labels_name: str, count: int, claimed: int | None = None,
                zero_images: int = 0) -> None:
    """``count`` random images and labels; the image header may claim ``claimed`` images and be
    followed by ``zero_images`` all-zero images (streamed, so a gigabyte of zeros is quick)."""
    rng = np.random.default_rng(count)
    directory.mkdir(parents=True, exist_ok=True)
    with gzip.open(directory / f"{images_name}.gz", "wb", compresslevel=1) as images:
        images.write(struct.pack(">4I", idx.IMAGE_MAGIC, count if claimed is None else claimed, 28, 28))
        images.write(rng.integers(0, 256, (count, 784), dtype=np.uint8).tobytes())
        chunk, left = bytes(784 * 20_000), 784 * zero_images
        while left > 0:
            images.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    (directory / f"{labels_name}.gz").write_bytes(gzip.compress(struct.pack(">2I", idx.LABEL_MAGIC, count)
                                                                + labels.tobytes()))


def data_dir(tmp_path: Path, train: int = 12, test: int = 7, **test_split: int) -> Path:
    directory = tmp_path / "mnist"
    write_split(directory, TRAIN_IMAGES, TRAIN_LABELS, train)
    write_split(directory, TEST_IMAGES, TEST_LABELS, test, **test_split)
    return directory


def with_peak_memory(code: str, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``code`` (which sets ``code`` by calling ``run_cli``) in a fresh Python; its result and peak
    memory in MB: ``VmHWM`` of that process alone (``ru_maxrss`` would count the test run it was
    forked from, as Linux keeps the high-water mark across exec)."""
    wrapper = ("import sys\nfrom common.cli import run_cli\n" + code + "\n"
               "sys.stdout.flush()\n"
               "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1]\n"
               "print('peak', int(peak) // 1024, file=sys.stderr)\n"
               "sys.exit(code)\n")
    env = {key: value for key, value in os.environ.items() if key != "MNIST_DATA_DIR"}
    done = subprocess.run([sys.executable, "-c", wrapper, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    lines = done.stderr.splitlines()
    assert lines and lines[-1].startswith("peak "), done.stderr
    done.stderr = "\n".join(lines[:-1]) + ("\n" if lines[:-1] else "")
    return done, int(lines[-1].split()[1])


# ---------------------------------------------------------------------------- empty splits

@pytest.mark.parametrize(("train", "test", "missing"), [(12, 0, "test"), (0, 7, "training")])
def test_a_data_set_without_test_or_training_images_is_refused_by_the_loader(tmp_path: Path, train: int, test: int,
                                                                           missing: str):
    with pytest.raises(DataError) as info:
        load_mnist(data_dir(tmp_path, train, test), fetch=False)
    message = str(info.value)
    assert f"no {missing} images" in message and "\n" not in message, message


def test_check_reports_an_empty_split_as_bad(tmp_path: Path):
    statuses = {check.name: (check.status, check.detail) for check in check_files(data_dir(tmp_path, 12, 0))}
    assert statuses[TEST_IMAGES][0] == "BAD" and "no test images" in statuses[TEST_IMAGES][1], statuses
    assert [statuses[name][0] for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_LABELS)] == ["ok"] * 3


# ---------------------------------------------------------------------------- headers that claim too much

@needs_proc
def test_check_refuses_two_million_claimed_images_before_decompressing_them(tmp_path: Path):
    """A few MB of gzip holding 2,000,000 images of zeros (1.6 GB): ``check`` used 3.1 GB before
    reporting the mismatch; now the header is refused for its count, in a few MB."""
    directory = data_dir(tmp_path, test=7, claimed=2_000_007, zero_images=2_000_000)
    assert (directory / f"{TEST_IMAGES}.gz").stat().st_size < 20_000_000
    done, peak = with_peak_memory("from common import data\ncode = run_cli(data.main, sys.argv[1:])",
                                  "check", "--data-dir", str(directory))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    bad = [line for line in done.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and TEST_IMAGES in bad[0] and "2000007" in bad[0].replace(",", ""), done.stdout
    assert peak < MAX_RSS_MB, f"{peak} MB"


@needs_proc
def test_load_compares_the_image_count_with_the_labels_before_reading_the_images(tmp_path: Path):
    """900,000 images of zeros (705 MB once decompressed) beside 7 labels: refused from the
    header, in little memory."""
    directory = data_dir(tmp_path, test=7, claimed=900_007, zero_images=900_000)
    done, peak = with_peak_memory("from common import data\n"
                                  "code = run_cli(lambda argv: data.load_mnist(argv[0], fetch=False) and 0, sys.argv[1:])",
                                  str(directory))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "7 labels" in done.stderr and "900007" in done.stderr.replace(",", ""), done.stderr
    assert peak < MAX_RSS_MB, f"{peak} MB"


def test_a_header_count_that_disagrees_with_the_labels_is_named_before_the_data_is_read(tmp_path: Path):
    """The header claims 900,000 images but holds 7: the mismatch with the labels is the reason,
    not a truncation found after reading."""
    with pytest.raises(DataError) as info:
        load_mnist(data_dir(tmp_path, test=7, claimed=900_000), fetch=False)
    message = str(info.value)
    assert "7 labels" in message and "900000" in message.replace(",", "") and "truncated" not in message


def test_a_label_file_claiming_more_than_any_data_set_is_refused_from_its_header(tmp_path: Path):
    directory = data_dir(tmp_path)
    (directory / f"{TEST_LABELS}.gz").write_bytes(gzip.compress(struct.pack(">2I", idx.LABEL_MAGIC, 4_000_000_000)))
    with pytest.raises(DataError, match="more than"):
        load_mnist(directory, fetch=False)


# ---------------------------------------------------------------------------- --data-dir that is a file

def test_a_data_dir_that_is_a_file_is_called_a_file(tmp_path: Path):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    for call in (lambda: load_mnist(file, fetch=False), lambda: load_mnist(file), lambda: check_files(file),
                 lambda: fetch_mnist(file, progress=False)):
        with pytest.raises(DataError) as info:
            call()
        assert "is a file, not a folder" in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_data_dir_inside_a_file_names_the_file(tmp_path: Path):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    for call in (lambda: load_mnist(file / "mnist", fetch=False), lambda: load_mnist(file / "mnist"),
                 lambda: check_files(file / "mnist"), lambda: fetch_mnist(file / "mnist", progress=False)):
        with pytest.raises(DataError) as info:
            call()
        assert f"{file} is a file" in str(info.value), str(info.value)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_data_dir_that_is_a_device_says_so(tmp_path: Path):
    link = tmp_path / "mnist"
    link.symlink_to("/dev/zero")
    with pytest.raises(DataError, match="is a character device, not a folder"):
        load_mnist(link, fetch=False)


def test_the_check_command_on_a_file_is_one_line(tmp_path: Path):
    file = tmp_path / "notes.txt"
    file.write_text("x")
    done = subprocess.run([sys.executable, "-m", "common.data", "check", "--data-dir", str(file)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "is a file, not a folder" in done.stderr


def test_a_full_data_set_still_loads(tmp_path: Path):
    dataset = load_mnist(data_dir(tmp_path), fetch=False)
    assert dataset.train_images.shape == (12, 784) and dataset.test_images.shape == (7, 784)
    assert [check.status for check in check_files(tmp_path / "mnist")] == ["ok"] * len(FILE_NAMES)
