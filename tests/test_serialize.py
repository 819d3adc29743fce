"""Tests for common.serialize: round trip, pickle-free format, and one-line UserErrors naming the file
for every kind of bad model file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common.nn.errors import UserError
from common.nn.network import Network
from common.serialize import load_network, save_network


def make_network(dtype: str = "float32") -> Network:
    net = Network.from_sizes([6, 5, 3], np.random.default_rng(0), activation="tanh", dtype=dtype,
                             hidden_dropout=0.25)
    net.flat_params[:] = np.random.default_rng(1).standard_normal(net.flat_params.size)
    return net


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip(tmp_path, dtype):
    """save -> load: same architecture, bit-identical parameters and predictions, metadata back."""
    net = make_network(dtype)
    metadata = {"pixel_scale": 255.0, "stage": "03", "notes": ["a", 1]}
    path = save_network(tmp_path / "sub" / "model.npz", net, metadata)
    assert path == tmp_path / "sub" / "model.npz" and path.is_file()
    loaded, meta = load_network(path)
    assert meta == metadata
    assert loaded.architecture == net.architecture
    assert loaded.dtype == net.dtype
    assert np.array_equal(loaded.flat_params, net.flat_params)
    x = np.random.default_rng(2).standard_normal((7, 6))
    assert np.array_equal(loaded.predict_proba(x), net.predict_proba(x))
    assert np.array_equal(loaded.predict(x), net.predict(x))


def test_file_loads_without_pickle(tmp_path):
    """The saved .npz opens with allow_pickle=False and holds a JSON header plus W0, b0, W1, b1."""
    path = save_network(tmp_path / "model.npz", make_network())
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["W0", "W1", "b0", "b1", "header"]
        header = json.loads(str(archive["header"]))
        assert archive["W0"].shape == (6, 5)
    assert header["architecture"]["sizes"] == [6, 5, 3]
    assert header["metadata"] == {}


def test_no_temporary_files_left(tmp_path):
    """Saving (twice, overwriting) leaves only the model file in the directory."""
    net = make_network()
    save_network(tmp_path / "model.npz", net)
    save_network(tmp_path / "model.npz", net, {"again": True})
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
    assert load_network(tmp_path / "model.npz")[1] == {"again": True}


def saved_arrays(tmp_path) -> dict:
    path = save_network(tmp_path / "good.npz", make_network())
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def assert_user_error_names(path):
    with pytest.raises(UserError) as info:
        load_network(path)
    message = str(info.value)
    assert path.name in message, message
    assert "\n" not in message


def test_truncated_file(tmp_path):
    """A model file cut in half: UserError naming the file."""
    data = save_network(tmp_path / "good.npz", make_network()).read_bytes()
    path = tmp_path / "truncated.npz"
    path.write_bytes(data[: len(data) // 2])
    assert_user_error_names(path)


def test_random_bytes_file(tmp_path):
    """Random bytes: UserError naming the file (and no pickle is ever loaded)."""
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(3).bytes(1000))
    assert_user_error_names(path)


def test_missing_key(tmp_path):
    """An .npz without one of the weight arrays: UserError naming the file."""
    arrays = saved_arrays(tmp_path)
    del arrays["b1"]
    path = tmp_path / "missing_key.npz"
    np.savez(path, **arrays)
    assert_user_error_names(path)


def test_wrong_weight_shape(tmp_path):
    """A weight matrix whose shape does not match the architecture: UserError naming the file."""
    arrays = saved_arrays(tmp_path)
    arrays["W1"] = np.zeros((4, 3), dtype=np.float32)
    path = tmp_path / "wrong_shape.npz"
    np.savez(path, **arrays)
    assert_user_error_names(path)


def test_missing_path(tmp_path):
    """A path that does not exist: UserError naming it."""
    assert_user_error_names(tmp_path / "nowhere.npz")


def test_not_a_model_npz(tmp_path):
    """A valid .npz of something else (no header), a plain .npy and a wrong format tag: UserError naming the file."""
    other = tmp_path / "other.npz"
    np.savez(other, data=np.arange(3))
    assert_user_error_names(other)
    npy = tmp_path / "array.npy"
    np.save(npy, np.arange(3))
    assert_user_error_names(npy)
    arrays = saved_arrays(tmp_path)
    header = json.loads(str(arrays["header"]))
    header["format"] = "someone-else/9"
    arrays["header"] = np.array(json.dumps(header))
    tagged = tmp_path / "tagged.npz"
    np.savez(tagged, **arrays)
    assert_user_error_names(tagged)


def bad_activation(header):
    header["architecture"]["activation"] = "softplus"
    return json.dumps(header)


def bad_sizes(header):
    header["architecture"]["sizes"] = [6]
    return json.dumps(header)


def header_not_an_object(header):
    return json.dumps(["not", "a", "dict"])


@pytest.mark.parametrize("corrupt", [bad_activation, bad_sizes, header_not_an_object])
def test_corrupt_header_names_the_file(tmp_path, corrupt):
    """A header that is JSON but not a valid architecture (unknown activation, too few sizes, not an
    object): still one UserError naming the file, not a bare message or a traceback."""
    arrays = saved_arrays(tmp_path)
    arrays["header"] = np.array(corrupt(json.loads(str(arrays["header"]))))
    path = tmp_path / f"{corrupt.__name__}.npz"
    np.savez(path, **arrays)
    assert_user_error_names(path)


def test_non_numeric_weights_names_the_file(tmp_path):
    """Weights of the right shape but a non-numeric dtype: UserError naming the file, not a ValueError."""
    arrays = saved_arrays(tmp_path)
    arrays["W0"] = np.full((6, 5), "x")
    path = tmp_path / "strings.npz"
    np.savez(path, **arrays)
    assert_user_error_names(path)


def message_for(path) -> str:
    with pytest.raises(UserError) as info:
        load_network(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_plain_and_pickled_npy_and_folder(tmp_path):
    """A plain .npy, a pickled-object .npy and a folder: one line each that says what the file is
    and never repeats NumPy's advice to pass allow_pickle (on every supported NumPy)."""
    plain = tmp_path / "weights.npy"
    np.save(plain, np.arange(3.0))
    assert "single NumPy array (.npy)" in message_for(plain)
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"W": 1}], dtype=object), allow_pickle=True)
    for message in (message_for(plain), message_for(pickled)):
        assert "allow_pickle" not in message and "model.npz" in message
    folder = tmp_path / "stage"
    folder.mkdir()
    assert "is a folder" in message_for(folder)
    save_network(folder / "model.npz", make_network())
    assert f"did you mean {folder / 'model.npz'}" in message_for(folder)


def test_pickled_member_in_npz_is_refused_without_allow_pickle_advice(tmp_path):
    arrays = saved_arrays(tmp_path)
    arrays["W0"] = np.array([[object()] * 5] * 6, dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **arrays)
    message = message_for(path)
    assert path.name in message and "allow_pickle" not in message and "object" in message


def test_metadata_that_is_not_an_object(tmp_path):
    arrays = saved_arrays(tmp_path)
    header = json.loads(str(arrays["header"]))
    header["metadata"] = "pixel_scale=unit"
    arrays["header"] = np.array(json.dumps(header))
    path = tmp_path / "metadata.npz"
    np.savez(path, **arrays)
    assert "metadata is not a JSON object" in message_for(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights(tmp_path, bad):
    arrays = saved_arrays(tmp_path)
    arrays["b1"] = arrays["b1"].copy()
    arrays["b1"][1] = bad
    path = tmp_path / "diverged.npz"
    np.savez(path, **arrays)
    assert "NaN or infinite weights" in message_for(path)


def forge_member(path, name: str, shape: tuple[int, ...], arrays: dict) -> None:
    """Write ``arrays`` as an .npz whose member ``name`` has a header claiming ``shape`` but
    holds only its real (small) data."""
    import io
    import zipfile
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            if key == name:
                np.lib.format.write_array_header_1_0(
                    buffer, {"descr": np.lib.format.dtype_to_descr(value.dtype), "fortran_order": False, "shape": shape})
                buffer.write(value.tobytes())
            else:
                np.lib.format.write_array(buffer, value)
            archive.writestr(f"{key}.npy", buffer.getvalue())


def test_forged_huge_shape_costs_no_memory(tmp_path):
    """A member whose header claims (6, 4,000,000) floats, with an architecture that agrees: refused by
    comparing the declared size with the bytes present, before anything is allocated."""
    arrays = saved_arrays(tmp_path)
    header = json.loads(str(arrays["header"]))
    header["architecture"]["sizes"] = [6, 4_000_000, 3]  # under MAX_PARAMETERS, so the shape check is reached
    arrays["header"] = np.array(json.dumps(header))
    path = tmp_path / "huge.npz"
    forge_member(path, "W0", (6, 4_000_000), arrays)
    message = message_for(path)
    assert "does not hold" in message and "W0" in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert "empty" in message_for(path)
