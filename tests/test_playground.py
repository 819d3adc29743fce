"""The playground's server: its answers, its refusals, its files, and its command line.

The request handler is tested through the real server on a free port (port 0) in a thread,
spoken to with ``http.client`` so that every request goes out byte for byte as written (no
client-side path clean-up); the command line through ``python -m common.playground`` itself.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from serving import in_a_thread
from webdriver import REPO_ROOT, Playground

from common import playground, robustness
from common.stages import stage_files

STATIC = REPO_ROOT / "common" / "playground_static"
MODELS = REPO_ROOT / "results" / "stages"
MAX_MILLISECONDS = 100.0
"""What the issue asks of one prediction by every stage, on the server."""


def drawing(kind: str = "one") -> bytes:
    """A 280 x 280 canvas as the page sends it, white ink on black, as PNG bytes: a vertical
    stroke ("one"), an ellipse ("zero") or nothing ("blank")."""
    canvas = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    pen = ImageDraw.Draw(canvas)
    if kind == "one":
        pen.line([(140, 45), (140, 235)], fill=(255, 255, 255, 255), width=20)
    elif kind == "zero":
        pen.ellipse([(80, 50), (200, 230)], outline=(255, 255, 255, 255), width=20)
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def body(kind: str = "one", **extra: object) -> bytes:
    """A ``POST /predict`` body for :func:`drawing` ``kind``, with ``extra`` keys (e.g. transform)."""
    url = "data:image/png;base64," + base64.b64encode(drawing(kind)).decode("ascii")
    return json.dumps({"image": url, **extra}).encode("utf-8")


@pytest.fixture(scope="module")
def server():
    """The playground server with every committed stage model, on a free port, in a thread."""
    stages, problems, _ = playground.load_stages(MODELS)
    assert stages and not problems, problems
    with in_a_thread(playground.make_server(stages, port=0)) as running:
        yield running


def request(server, method: str, path: str, data: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection: ``(status, headers, body)``."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    try:
        connection.request(method, path, body=data, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def predict(server, data: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    status, _, reply = request(server, "POST", "/predict", data, {"Content-Type": content_type})
    return status, json.loads(reply)


def top(answer: dict) -> dict[str, int]:
    return {stage["name"]: int(np.argmax(stage["probabilities"])) for stage in answer["stages"]}


# ---------------------------------------------------------------------------- good requests

def test_a_drawing_gets_ten_probabilities_per_stage_summing_to_one(server):
    status, answer = predict(server, body("one"))
    assert status == 200, answer
    assert [stage["name"] for stage in answer["stages"]] == [path.stem for path in stage_files().values()]
    for stage in answer["stages"]:
        assert len(stage["probabilities"]) == 10 and min(stage["probabilities"]) >= 0
        assert sum(stage["probabilities"]) == pytest.approx(1.0, abs=1e-5), stage["name"]
        assert stage["title"], stage["name"]
    pixels = np.array(answer["input"])
    assert pixels.shape == (784,) and pixels.min() == 0 and pixels.max() == 255


@pytest.mark.parametrize(("kind", "digit"), [("one", 1), ("zero", 0)])
def test_stage_04_and_later_read_a_drawn_digit(server, kind: str, digit: int):
    _, answer = predict(server, body(kind))
    later = {name: guess for name, guess in top(answer).items() if name >= "04"}
    assert len(later) == len([name for name in stage_files().values() if name.stem >= "04"])
    assert set(later.values()) == {digit}, top(answer)


def test_the_input_is_the_one_preprocessing_of_common_predict(server):
    from common.predict import decode_image, preprocess_image

    _, answer = predict(server, body("zero"))
    expected = preprocess_image(decode_image(io.BytesIO(drawing("zero")), "drawing"))
    assert answer["input"] == expected.tolist()


def test_a_prediction_by_every_stage_takes_at_most_100_ms(server):
    times = [predict(server, body("one"))[1]["milliseconds"] for _ in range(7)]
    assert 0 < sorted(times)[len(times) // 2] <= MAX_MILLISECONDS, times


def test_a_blank_canvas_is_no_digit_not_an_error(server):
    status, answer = predict(server, body("blank"))
    assert status == 200 and answer["blank"] is True and "stages" not in answer


def test_transforms_are_those_of_common_robustness(server):
    plain = np.array(predict(server, body("one"))[1]["input"], dtype=np.uint8)
    _, moved = predict(server, body("one", transform={"shift": [3, -2]}))
    assert moved["input"] == robustness.shift_images(plain[None, :], -2, 3)[0].tolist()
    _, turned = predict(server, body("one", transform={"rotate": 90}))
    expected = robustness.rotate(plain[None, :] / np.float32(255.0), 90)[0]
    assert turned["input"] == np.rint(expected * 255).astype(int).tolist()
    _, noisy = predict(server, body("one", transform={"noise": 0.3, "seed": 1}))
    _, again = predict(server, body("one", transform={"noise": 0.3, "seed": 1}))
    assert noisy["input"] == again["input"] != plain.tolist()


def test_requests_in_parallel_all_get_answers(server):
    results = []
    threads = [threading.Thread(target=lambda: results.append(predict(server, body("one"))[0])) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [200] * 6


# ---------------------------------------------------------------------------- files

def test_the_page_and_its_assets_are_served_and_self_contained(server):
    status, headers, page = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert page == (STATIC / "index.html").read_bytes()
    for name, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
        status, headers, content = request(server, "GET", f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(kind), name
        assert content == (STATIC / name).read_bytes()
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), f"{path.name} refers to another site"
        assert "@import" not in text and "url(" not in text, path.name
    assert 'src="/static/playground.js"' in page.decode() and "<script>" not in page.decode()


@pytest.mark.parametrize("path", [
    "/static/../playground.py", "/static/..%2fplayground.py", "/static/%2e%2e/playground.py",
    "/../README.md", "/static/../../README.md", "/static/", "/static", "/static//etc/passwd",
    "/playground.py", "/common/playground.py", "/static/index.html/..", "//etc/passwd",
    "/static/%2Fetc%2Fpasswd", "/static/playground.js%00.css", "/static/.%2e/playground.py",
])
def test_anything_but_the_page_and_its_assets_is_404(server, path: str):
    status, _, reply = request(server, "GET", path)
    assert status == 404, path
    assert set(json.loads(reply)) == {"error"}


# ---------------------------------------------------------------------------- bad requests

def not_an_image() -> bytes:
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}).encode()


def too_many_pixels() -> bytes:
    """A 2,500 x 2,500 black PNG: a few kB of data, over the 4-million-pixel limit once decoded."""
    buffer = io.BytesIO()
    Image.new("L", (2500, 2500), 0).save(buffer, "PNG")
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}).encode()


BAD_POSTS = {
    "malformed JSON": (b'{"image": ', "application/json", 400),
    "JSON nested too deeply": (b"[" * 200_000, "application/json", 400),
    "not an object": (b"[1, 2]", "application/json", 400),
    "no image": (b"{}", "application/json", 400),
    "not a data URL": (b'{"image": "hello"}', "application/json", 400),
    "not base64": (b'{"image": "data:image/png;base64,@@@"}', "application/json", 400),
    "not an image": (not_an_image(), "application/json", 400),
    "too many pixels": (too_many_pixels(), "application/json", 400),
    "unknown key": (b'{"image": "x", "extra": 1}', "application/json", 400),
    "bad transform": (body("one", transform={"rotate": "a lot"}), "application/json", 400),
    "shift not whole pixels": (body("one", transform={"shift": [0.5, 0]}), "application/json", 400),
    "wrong content type": (body("one"), "text/plain", 415),
    "oversized body": (b"{" + b" " * 1_000_001 + b"}", "application/json", 413),
}


def assert_one_line_error(status: int, expected: int, reply: bytes) -> None:
    assert status == expected, reply
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
    error = json.loads(reply)
    assert set(error) == {"error"} and error["error"] and "Traceback" not in error["error"]


@pytest.mark.parametrize("case", BAD_POSTS, ids=str)
def test_a_bad_body_gets_its_4xx_and_a_one_line_json_error(server, case: str):
    data, content_type, expected = BAD_POSTS[case]
    status, _, reply = request(server, "POST", "/predict", data, {"Content-Type": content_type})
    assert_one_line_error(status, expected, reply)


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("GET", "/predict", 405), ("PUT", "/predict", 405), ("DELETE", "/", 405), ("PATCH", "/predict", 405),
    ("POST", "/", 405), ("POST", "/elsewhere", 404),
])
def test_a_wrong_method_or_route_gets_its_4xx(server, method: str, path: str, expected: int):
    status, headers, reply = request(server, method, path, b"{}", {"Content-Type": "application/json"})
    assert_one_line_error(status, expected, reply)
    if expected == 405:
        assert headers["Allow"]


def raw_exchange(server, data: bytes) -> bytes:
    """Send ``data`` on a bare socket; everything the server answers before it closes."""
    with socket.create_connection(server.server_address[:2], timeout=30) as connection:
        connection.sendall(data)
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(("data", "expected"), [
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n", b"411"),
    (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: lots\r\n\r\n", b"400"),
    (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000000\r\nContent-Type: application/json\r\n\r\n{", b"413"),
    (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999999\r\n\r\n{", b"413"),
    (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\nContent-Type: application/json\r\n"
     b"Connection: close\r\n\r\n{}", b"408"),  # the body stops half-way
], ids=["garbage", "header too long", "no length", "length not a number", "5 MB never sent", "100 GB declared",
        "half a body"])
def test_broken_requests_get_a_4xx_and_the_server_keeps_serving(server, data: bytes, expected: bytes,
                                                                  monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(playground.PlaygroundHandler, "timeout", 1)  # the half-sent body: give up after 1 s
    head, _, content = raw_exchange(server, data).partition(b"\r\n\r\n")
    assert head.split()[1] == expected, head
    assert set(json.loads(content)) == {"error"}
    assert predict(server, body("one"))[0] == 200


# ---------------------------------------------------------------------------- command line

def run(*args: str, seconds: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.playground", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=seconds)


def test_the_command_serves_the_page_and_stops_cleanly_on_ctrl_c(tmp_path: Path):
    models = tmp_path / "models"
    (models / "04_adam").mkdir(parents=True)
    shutil.copy(MODELS / "04_adam" / "model.npz", models / "04_adam" / "model.npz")
    (models / "99_broken").mkdir()
    (models / "99_broken" / "model.npz").write_bytes(b"not a model")
    server = Playground("--models-dir", str(models))
    try:
        printed = "".join(server.printed)
        assert "loaded 1 stage" in printed and "04_adam" in printed
        assert "missing 01_one_hidden_gd" in printed and "python stages/01_one_hidden_gd.py" in printed
        assert "missing 04_adam" not in printed
        assert re.search(r"skipped: .*99_broken", printed), printed
        connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        started = time.monotonic()
        code, rest = server.stop()
    assert code == 0 and "playground stopped" in rest and "Traceback" not in rest, rest
    assert time.monotonic() - started < 10


def test_a_port_in_use_is_one_line_and_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run("--port", str(taken.getsockname()[1]))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "already in use" in done.stderr, done.stderr


@pytest.mark.parametrize("args", [["--port", "70000"], ["--port", "eighty"], ["--no-such-option"]])
def test_bad_options_are_one_line_and_exit_2(args: list[str]):
    done = run(*args)
    assert done.returncode == 2 and done.stderr.startswith("error:") and done.stderr.count("\n") == 1, done.stderr


def test_no_model_at_all_is_one_line_and_exit_2(tmp_path: Path):
    done = run("--port", "0", "--models-dir", str(tmp_path))
    assert done.returncode == 2, done.stdout
    assert done.stderr.count("\n") == 1 and "no trained model" in done.stderr, done.stderr
    assert "python stages/04_adam.py" in done.stdout + done.stderr
