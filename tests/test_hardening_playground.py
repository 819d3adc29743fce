"""The playground under load and under attack: a burst of requests, a damaged model among the
stages, a foreign Host header, a Content-Length in Unicode digits, and a missing Pillow.

The burst runs the real command (``python -m common.playground``) in a subprocess, so its peak
memory is the server's own (``VmHWM`` in ``/proc/PID/status``); the other cases speak to a
server in a thread, byte for byte, as ``tests/test_playground.py`` does.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from serving import in_a_thread
from test_hardening_models import zip_headers_claiming
from webdriver import REPO_ROOT, Playground

from common import playground

MODELS = REPO_ROOT / "results" / "stages"
STATIC = REPO_ROOT / "common" / "playground_static"
BURST = 100
"""Concurrent requests in the load test."""
MAX_PEAK_MB = 500
"""The server's peak memory (its max RSS) through the burst."""
WATCHDOG_MB = 2500
"""Past this the load test kills the server at once, so a regression cannot exhaust the machine."""


def drawing_png(side: int) -> bytes:
    """A ``side`` x ``side`` RGBA canvas with a white stroke on black, as PNG bytes (a few kB)."""
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    ImageDraw.Draw(canvas).line([(side // 2, side // 6), (side // 2, 5 * side // 6)],
                                fill=(255, 255, 255, 255), width=max(2, side // 14))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG")
    return buffer.getvalue()


def predict_body(png: bytes) -> bytes:
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}).encode()


def status_of(path: str) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of a process in MB, from ``/proc/PID/status``."""
    fields = {}
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) // 1024
    return fields


def one_post(host: str, port: int, data: bytes, barrier: threading.Barrier) -> tuple[object, bytes]:
    """Wait for every sender, then POST ``data`` to /predict: ``(status or exception name, body)``."""
    barrier.wait(30)
    connection = http.client.HTTPConnection(host, port, timeout=55)
    try:
        connection.request("POST", "/predict", body=data, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    except Exception as error:  # a reset or a timeout is what the test counts
        return type(error).__name__, b""
    finally:
        connection.close()


def watch_memory(process: subprocess.Popen, stop: threading.Event) -> None:
    """Kill ``process`` if its memory passes :data:`WATCHDOG_MB` before ``stop`` is set."""
    while not stop.wait(0.05):
        try:
            if status_of(f"/proc/{process.pid}/status")["VmRSS"] > WATCHDOG_MB:
                process.kill()
                return
        except (OSError, KeyError):
            return


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's peak memory")
def test_a_burst_of_100_requests_gets_200_or_503_each_and_the_server_stays_under_500_mb():
    """100 concurrent requests, each with the largest image the server accepts: every one is
    answered (200, or 503 when the queue is full), none is reset, and the server's peak memory
    stays under 500 MB (it was 1.9 GB for 20 such requests, with 26-36 resets for 100)."""
    side = math.isqrt(playground.MAX_IMAGE_PIXELS)
    data = predict_body(drawing_png(side))
    server = Playground("--models-dir", str(MODELS))
    stop = threading.Event()
    try:
        host, port = server.url.removeprefix("http://").split(":")
        threading.Thread(target=watch_memory, args=(server.process, stop), daemon=True).start()
        barrier = threading.Barrier(BURST)
        results: list = [None] * BURST

        def send(index: int) -> None:
            results[index] = one_post(host, int(port), data, barrier)

        started = time.monotonic()
        threads = [threading.Thread(target=send, args=(index,)) for index in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        seconds = time.monotonic() - started
        peak = status_of(f"/proc/{server.process.pid}/status")["VmHWM"] if server.process.poll() is None else None
    finally:
        stop.set()
        server.stop()
    statuses = [result[0] if result else "no answer" for result in results]
    counts = {status: statuses.count(status) for status in set(statuses)}
    assert set(statuses) <= {200, 503}, counts
    assert statuses.count(200) > 0, counts
    for status, reply in results:
        if status == 503:
            assert reply.count(b"\n") == 1 and set(json.loads(reply)) == {"error"}, reply
    assert peak is not None and peak < MAX_PEAK_MB, f"server peak {peak} MB (killed past {WATCHDOG_MB} MB)"
    assert seconds < 60, seconds


def test_the_image_limit_fits_the_page_canvas_and_little_more():
    """The page sends its canvas (``<canvas id="draw" width=W height=H>``); the server accepts that
    and refuses images much larger, before decoding them."""
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    width, height = map(int, re.search(r'<canvas id="draw" width="(\d+)" height="(\d+)"', page).groups())
    assert width * height <= playground.MAX_IMAGE_PIXELS <= 1_048_576


@pytest.fixture(scope="module")
def server():
    """The playground with stage 04's model only, on a free port, in a thread."""
    stages, problems, _ = playground.load_stages(MODELS)
    stages = [stage for stage in stages if stage.name == "04_adam"]
    with in_a_thread(playground.make_server(stages, port=0)) as running:
        yield running


def exchange(server, data: bytes) -> tuple[bytes, bytes]:
    """Send ``data`` on a bare socket; ``(status code, body)`` of the answer."""
    with socket.create_connection(server.server_address[:2], timeout=30) as connection:
        connection.sendall(data)
        chunks = []
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    head, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    return head.split()[1], content


def post_with(host: str | None, data: bytes, length: str | None = None) -> bytes:
    """A raw ``POST /predict`` with the given Host header (None: none) and Content-Length."""
    lines = [b"POST /predict HTTP/1.1"] + ([f"Host: {host}".encode()] if host is not None else [])
    length_line = f"Content-Length: {len(data) if length is None else length}"
    lines += [b"Content-Type: application/json", b"Connection: close",  # http.server reads headers as Latin-1
              length_line.encode("latin-1" if max(length_line) <= "\xff" else "utf-8")]
    return b"\r\n".join(lines) + b"\r\n\r\n" + data


def test_a_full_queue_gets_a_503_with_a_one_line_json_error(server, monkeypatch: pytest.MonkeyPatch):
    """With every work slot taken, a request waits at most QUEUE_SECONDS, then gets a 503."""
    monkeypatch.setattr(playground, "QUEUE_SECONDS", 0.2)
    taken = [playground.WORK_SLOTS.acquire(timeout=10) for _ in range(playground.MAX_CONCURRENT)]
    try:
        assert all(taken)
        port = server.server_address[1]
        code, content = exchange(server, post_with(f"127.0.0.1:{port}", predict_body(drawing_png(280))))
    finally:
        for _ in taken:
            playground.WORK_SLOTS.release()
    assert code == b"503", content
    assert content.count(b"\n") == 1 and "busy" in json.loads(content)["error"]
    code, _ = exchange(server, post_with(f"127.0.0.1:{port}", predict_body(drawing_png(280))))
    assert code == b"200"


def test_the_listen_backlog_queues_a_burst():
    assert playground.PlaygroundServer.request_queue_size >= 128


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "localhost.evil.example:{port}", "10.0.0.1", "[::2]:{port}", "::1",
                                  "127.0.0.1:{port}@evil.example", "127.0.0.1:x", ""])
def test_a_foreign_host_header_is_refused_with_421(server, host: str):
    """A DNS-rebinding page reaches the playground under its own name: refuse anything but the
    loopback names and the address the server listens on."""
    port = server.server_address[1]
    code, content = exchange(server, post_with(host.format(port=port), predict_body(drawing_png(280))))
    assert code == b"421", (host, content)
    assert content.count(b"\n") == 1 and "Host" in json.loads(content)["error"]
    request = f"GET / HTTP/1.1\r\nHost: {host.format(port=port)}\r\nConnection: close\r\n\r\n".encode()
    assert exchange(server, request)[0] == b"421"


def test_a_request_without_host_or_with_two_is_refused(server):
    port = server.server_address[1]
    assert exchange(server, post_with(None, b"{}"))[0] == b"400"
    two = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert exchange(server, two.encode())[0] == b"400"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "localhost:{port}",
                                  "LOCALHOST:{port}", "[::1]", "[::1]:{port}", "localhost:9000"])
def test_the_loopback_names_are_accepted(server, host: str):
    """With or without a port (another port too: an ``ssh -L 9000:127.0.0.1:8000`` tunnel)."""
    port = server.server_address[1]
    code, content = exchange(server, post_with(host.format(port=port), predict_body(drawing_png(280))))
    assert code == b"200", (host, content)
    assert len(json.loads(content)["stages"]) == 1


@pytest.mark.parametrize("length", ["\u00b2", "\u00b9\u00b2", "\u00b3", "\u0661\u0662", "\uff15", "+5", "-1", "5 5", "0x10", "1_0", "5.0"])
def test_a_content_length_in_anything_but_ascii_digits_is_a_400(server, length: str):
    port = server.server_address[1]
    code, content = exchange(server, post_with(f"127.0.0.1:{port}", b"{}", length))
    assert code == b"400", (length, content)
    assert set(json.loads(content)) == {"error"}


def test_a_content_length_of_thousands_of_digits_is_a_413_not_a_500(server):
    port = server.server_address[1]
    code, content = exchange(server, post_with(f"127.0.0.1:{port}", b"{}", "9" * 5000))
    assert code == b"413", content
    assert len(json.loads(content)["error"]) < 300


# ---------------------------------------------------------------------------- damaged models

@pytest.mark.parametrize(("method", "flags"), [(9, 0), (0, 1)], ids=["deflate64", "encrypted"])
def test_a_damaged_model_among_the_stages_is_skipped_with_one_line(tmp_path: Path, method: int, flags: int):
    models = tmp_path / "models"
    shutil.copytree(MODELS / "04_adam", models / "04_adam")
    (models / "03_minibatch").mkdir()
    zip_headers_claiming(MODELS / "03_minibatch" / "model.npz", models / "03_minibatch" / "model.npz", method, flags)
    server = Playground("--models-dir", str(models))
    try:
        printed = "".join(server.printed)
    finally:
        code, rest = server.stop()
    skipped = [line for line in printed.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1 and "03_minibatch" in skipped[0], printed
    assert "Traceback" not in printed + rest and "loaded 1 stage" in printed and code == 0


def test_an_unexpected_failure_loading_one_model_skips_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Whatever goes wrong reading one model (here a RuntimeError), the others still load."""
    models = tmp_path / "models"
    for name in ("03_minibatch", "04_adam"):
        shutil.copytree(MODELS / name, models / name)
    real = playground.load_model

    def flaky(path: Path):
        if path.parent.name == "03_minibatch":
            raise RuntimeError("something unforeseen\nwith a second line")
        return real(path)

    monkeypatch.setattr(playground, "load_model", flaky)
    stages, problems, _ = playground.load_stages(models)
    assert [stage.name for stage in stages] == ["04_adam"]
    assert len(problems) == 1 and "03_minibatch" in problems[0] and "\n" not in problems[0], problems


# ---------------------------------------------------------------------------- no Pillow

NO_PILLOW = "import sys; sys.modules['PIL'] = None\n"
"""A ``sitecustomize`` that makes ``import PIL`` fail, as if Pillow were not installed."""


def without_pillow(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import PIL."""
    site = tmp_path / "no_pillow"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_PILLOW)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}


def test_the_playground_without_pillow_says_how_to_install_it(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "common.playground", "--port", "0", "--models-dir", str(MODELS)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=without_pillow(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error:"), done.stderr
    assert "Pillow" in done.stderr and "python -m pip install pillow" in done.stderr


def test_a_request_without_pillow_gets_a_one_line_500(server, monkeypatch: pytest.MonkeyPatch):
    request = post_with(f"127.0.0.1:{server.server_address[1]}", predict_body(drawing_png(280)))
    monkeypatch.setitem(sys.modules, "PIL", None)
    code, content = exchange(server, request)
    monkeypatch.undo()
    assert code == b"500", content
    assert content.count(b"\n") == 1 and "python -m pip install pillow" in json.loads(content)["error"]
