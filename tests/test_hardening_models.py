"""Hostile model files (common.serialize, shared by predict, the playground and robustness): each is
one line naming the file, never a traceback, a hang or gigabytes of memory.

Encrypted members and unsupported compression methods, JSON headers with Infinity, booleans or
thousands of levels of nesting, a zip bomb whose weights agree with its architecture, and a
model path that is a FIFO or a character device.
"""
from __future__ import annotations

import io
import json
import os
import resource
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common import serialize
from common.nn.errors import UserError
from common.nn.network import Network
from common.serialize import load_network, save_network

REPO_ROOT = Path(__file__).resolve().parent.parent


def small_model(path: Path) -> Path:
    network = Network.from_sizes([6, 5, 3], np.random.default_rng(0))
    return save_network(path, network, {"pixel_scale": "unit"})


def members(path: Path) -> dict[str, bytes]:
    """Every member of the archive at ``path``, by name, as raw ``.npy`` bytes."""
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def write_zip(path: Path | io.BytesIO, content: dict[str, bytes]) -> Path | io.BytesIO:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in content.items():
            archive.writestr(name, data)
    return path


def with_header(source: Path, target: Path, header_text: str) -> Path:
    """The model ``source`` with its JSON header replaced by ``header_text``."""
    content = members(source)
    content["header.npy"] = npy(np.array(header_text))
    return write_zip(target, content)


def zip_headers_claiming(source: Path, target: Path, method: int, flags: int) -> Path:
    """The model ``source``, stored, with every zip header (local and central) claiming the
    compression ``method`` (9: deflate64) and the flag bits ``flags`` (1: encrypted)."""
    buffer = io.BytesIO()
    write_zip(buffer, members(source))
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as written:
        infos, offset = written.infolist(), written.start_dir
    for info in infos:
        struct.pack_into("<HH", data, info.header_offset + 6, flags, method)
    for _ in infos:
        assert data[offset:offset + 4] == b"PK\x01\x02"
        struct.pack_into("<HH", data, offset + 8, flags, method)
        name, extra, comment = struct.unpack_from("<HHH", data, offset + 28)
        offset += 46 + name + extra + comment
    target.write_bytes(bytes(data))
    return target


def one_line(path: Path) -> str:
    """The one-line :class:`UserError` that loading ``path`` raises; it names the file."""
    with pytest.raises(UserError) as info:
        load_network(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message, message
    return message


# ---------------------------------------------------------------------------- the archive

@pytest.mark.parametrize(("method", "flags", "expected"), [(9, 0, "deflate64"), (12, 0, "bzip2"), (99, 0, "method 99"),
                                                           (0, 1, "encrypted"), (8, 1, "encrypted")])
def test_encrypted_or_unsupported_compression_is_one_line(tmp_path: Path, method: int, flags: int, expected: str):
    path = zip_headers_claiming(small_model(tmp_path / "good.npz"), tmp_path / "odd.npz", method, flags)
    assert expected in one_line(path)


# ---------------------------------------------------------------------------- the JSON header

def header_of(path: Path) -> dict:
    with np.load(path) as archive:
        return json.loads(str(archive["header"]))


@pytest.mark.parametrize("sizes", ["[Infinity, 5, 3]", "[6, -Infinity, 3]", "[NaN, 5, 3]", "[6, 1e400, 3]",
                                   "[true, 5, 3]", "[6, true, 3]", "[6, false, 3]", "[6.0, 5, 3]", '["6", 5, 3]'])
def test_sizes_that_are_not_whole_numbers_are_one_line(tmp_path: Path, sizes: str):
    good = small_model(tmp_path / "good.npz")
    text = json.dumps(header_of(good)).replace("[6, 5, 3]", sizes)
    assert sizes in text
    message = one_line(with_header(good, tmp_path / "sizes.npz", text))
    assert "sizes" in message


@pytest.mark.parametrize("nesting", ['{"a": ' * 5000 + "1" + "}" * 5000, "[" * 100_000 + "]" * 100_000])
def test_a_header_nested_thousands_deep_is_one_line(tmp_path: Path, nesting: str):
    good = small_model(tmp_path / "good.npz")
    header = json.dumps(header_of(good)).replace('"metadata": {', f'"deep": {nesting}, "metadata": {{')
    assert "nested" in one_line(with_header(good, tmp_path / "deep.npz", header))


# ---------------------------------------------------------------------------- what a model may declare

def write_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> None:
    """A float32 member of zeros of ``shape``, streamed (a gigabyte compresses to a megabyte)."""
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
        left, chunk = 4 * int(np.prod(shape)), bytes(1 << 24)
        while left > 0:
            member.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)


def zip_bomb(path: Path, sizes: list[int]) -> Path:
    """A model whose architecture and weights agree, all zeros, deflated: a few MB on disk."""
    header = {"format": serialize.FORMAT, "metadata": {"pixel_scale": "unit"},
              "architecture": {"sizes": sizes, "activation": "relu", "input_dropout": 0.0, "hidden_dropout": 0.0,
                               "dtype": "float32", "layers": []}}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("header.npy", npy(np.array(json.dumps(header))))
        for index, (inputs, outputs) in enumerate(zip(sizes[:-1], sizes[1:])):
            write_member(archive, f"W{index}", (inputs, outputs))
            write_member(archive, f"b{index}", (outputs,))
    return path


def limit_memory() -> None:
    """In the child: at most 4 GB of address space, so a regression fails instead of swapping."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_a_zip_bomb_with_consistent_weights_is_refused_before_reading(tmp_path: Path):
    """784 x 400,000 weights (1.25 GB of zeros in a few MB): refused for the parameters it
    declares, by ``python -m common.predict``, with one line and little memory."""
    bomb = zip_bomb(tmp_path / "bomb.npz", [784, 400_000, 10])
    assert bomb.stat().st_size < 20_000_000
    digit = tmp_path / "digit.png"
    canvas = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(canvas).line([(50, 15), (50, 85)], fill=255, width=9)
    canvas.save(digit)
    done = subprocess.run([sys.executable, "-m", "common.predict", str(digit), "--model", str(bomb)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, preexec_fn=limit_memory)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "parameters" in done.stderr and "bomb.npz" in done.stderr, done.stderr


def test_the_parameter_cap_is_checked_from_the_architecture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """At the cap a model loads; one parameter over, it is refused without reading a weight."""
    path = small_model(tmp_path / "model.npz")  # 6*5 + 5 + 5*3 + 3 = 53 parameters
    monkeypatch.setattr(serialize, "MAX_PARAMETERS", 53)
    load_network(path)
    monkeypatch.setattr(serialize, "MAX_PARAMETERS", 52)
    read, real = [], serialize._read_member
    monkeypatch.setattr(serialize, "_read_member", lambda archive, name, *rest: read.append(name) or real(archive, name, *rest))
    assert "53 parameters" in one_line(path)
    assert read == ["header"]


def test_a_layer_with_millions_of_values_per_image_is_refused(tmp_path: Path):
    """Few parameters but a huge activation: 1x1 convolutions with 20,000 filters on a 28x28 image
    make 15.7 million values per image (63 MB each, 630 GB for a batch of 10,000)."""
    layers = ["reshape 28x28x1", "conv 20000 1x1 same", "maxpool", "maxpool", "maxpool", "flatten", "dense 10"]
    text = json.dumps({"format": serialize.FORMAT, "metadata": {"pixel_scale": "unit"},
                       "architecture": {"sizes": [784, 10], "layers": layers}})
    path = write_zip(tmp_path / "wide.npz", {"header.npy": npy(np.array(text))})
    assert "values per image" in one_line(path)


def test_a_weight_in_a_wider_float_type_is_refused(tmp_path: Path):
    good = small_model(tmp_path / "good.npz")
    content = members(good)
    content["W0.npy"] = npy(np.zeros((6, 5), dtype=np.longdouble))
    if np.dtype(np.longdouble).itemsize <= 8:
        pytest.skip("long double is a plain double here")
    assert "W0" in one_line(write_zip(tmp_path / "wide.npz", content))


# ---------------------------------------------------------------------------- not a regular file

def load_in_a_thread(path: Path, seconds: float = 10) -> str:
    """The one-line error loading ``path`` gives, or fail if it takes more than ``seconds``."""
    outcome: list = []

    def load() -> None:
        try:
            load_network(path)
            outcome.append("loaded")
        except UserError as error:
            outcome.append(str(error))

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with open(path, "wb"):  # unblock the reader of the FIFO, so the thread can end
            pass
        pytest.fail(f"loading {path} blocked for {seconds} s")
    assert outcome and "\n" not in outcome[0] and path.name in outcome[0], outcome
    return outcome[0]


def test_a_fifo_is_named_as_such_and_never_blocks(tmp_path: Path):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    message = load_in_a_thread(fifo)
    assert "not a regular file" in message and "FIFO" in message and "does not exist" not in message


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
def test_a_link_to_a_character_device_is_named_as_such(tmp_path: Path):
    link = tmp_path / "model.npz"
    link.symlink_to("/dev/zero")
    message = load_in_a_thread(link)
    assert "not a regular file" in message and "character device" in message and "does not exist" not in message


def test_a_broken_link_says_where_it_points(tmp_path: Path):
    link = tmp_path / "model.npz"
    link.symlink_to(tmp_path / "gone.npz")
    message = one_line(link)
    assert "does not exist" in message and "gone.npz" in message
