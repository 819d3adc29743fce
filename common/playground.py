"""The playground: draw a digit in the browser and every trained stage's network answers side by side.

Command line::

    python -m common.playground [--port 8000] [--models-dir results/stages]

loads every ``<models-dir>/<stage>/model.npz`` (in stage order), says which numbered stages have no
model yet and how to train them, and serves on ``http://127.0.0.1:8000/`` only (out of other
machines' reach) until Ctrl-C. Routes:

* ``GET /``: the page; ``GET /static/<name>``: its script and style, from
  ``common/playground_static/`` only (one plain file name; anything else is 404).
* ``POST /predict``: JSON ``{"image": "data:image/png;base64,...", "transform": {...}}``, the
  canvas as a PNG data URL. The image goes through the one preprocessing of
  ``python -m common.predict`` (:func:`common.predict.preprocess_image`); the optional transform
  (``"rotate"``: degrees counter-clockwise, ``"shift": [dx, dy]`` whole pixels right and down,
  ``"noise"``: standard deviation of Gaussian noise on the 0..1 scale, ``"seed"``) is then applied
  to the 28 x 28 digit by the functions ``experiments/robustness.py`` measures the stages with
  (:mod:`common.robustness`), so a learner sees what a moved, turned or noisy digit does to each
  network. The answer: ``{"input": [784 ints 0-255], "stages": [{"name", "title", "adds",
  "probabilities": [10 floats]}], "milliseconds": server time}``, or ``{"blank": true, ...}`` for
  an empty drawing.

Every bad request (malformed JSON, no image or not an image, a body over 1 MB, no Content-Length
or one not in ASCII digits, a wrong method or path) gets a 4xx status and a one-line JSON
``{"error": "..."}``; the server keeps serving and logs nothing per request.

Only this machine's names are answered: a request whose ``Host`` is not ``127.0.0.1``,
``localhost``, ``[::1]`` (any port) or the address served on gets a 421, so a web page that
rebinds its own name to 127.0.0.1 (DNS rebinding) cannot drive the networks. The work is
bounded: at most :data:`MAX_CONCURRENT` requests decode and predict at once, the others wait up
to :data:`QUEUE_SECONDS` and then get a 503; images over :data:`MAX_IMAGE_PIXELS` are refused
before they are decoded; the listen backlog holds a burst of :data:`LISTEN_BACKLOG` connections.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import errno
import io
import json
import re
import socketserver
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np

from common import robustness
from common.cli import OneLineParser, run_cli
from common.idx import IMAGE_SIDE
from common.nn.errors import UserError
from common.nn.network import Network
from common.paths import RESULTS_DIR, shown
from common.predict import MissingPackage, classify, decode_image, load_model, preprocess_image, require_pillow
from common.stages import load_specs

HOST = "127.0.0.1"
"""The playground listens on this machine only."""
DEFAULT_PORT = 8000
DEFAULT_MODELS_DIR = RESULTS_DIR / "stages"
STATIC_DIR = Path(__file__).resolve().parent / "playground_static"
MAX_BODY_BYTES = 1_000_000
"""A 280 x 280 canvas as a PNG data URL is a few kB; bodies over 1 MB are refused unread."""
DRAIN_BYTES = 8_000_000
"""A refused body up to this size is read and dropped before the answer (see ``_discard``)."""
MAX_IMAGE_PIXELS = 1_000_000
"""Images larger than this (width x height: 1000 x 1000, 12 times the page's 280 x 280 canvas)
are refused before they are decoded: decoding and preparing one image at the limit takes tens of
MB (:func:`common.predict.decode_image`, :func:`common.predict.preprocess_image`)."""
MAX_CONCURRENT = 2
"""Requests decoding and predicting at once (one per core); the others wait for a slot."""
QUEUE_SECONDS = 5.0
"""How long a request waits for a slot before a 503; the page sends one request at a time."""
WORK_SLOTS = threading.BoundedSemaphore(MAX_CONCURRENT)
"""The slots: peak memory is the loaded models plus MAX_CONCURRENT images, however many ask."""
LISTEN_BACKLOG = 128
"""Connections the kernel queues before the server accepts them (``socketserver``'s default, 5,
reset most of a burst of 100)."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
"""The Host names answered (with any port: an ``ssh -L`` tunnel changes it), and the address served on."""
MAX_LENGTH_DIGITS = 15
"""A Content-Length with more digits (leading zeros aside) is refused as far over 1 MB unparsed."""
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
STATIC_NAMES = ("index.html", "playground.css", "playground.js")
"""The only files served: the page and its assets, named here, so nothing else can be reached."""
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self'; "
                           "script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'")
"""The page is self-contained: nothing from other origins, no inline script."""
BLANK_PREFIX = "no digit found"
"""How :func:`common.predict.preprocess_image`'s error for an empty image begins."""
TRANSFORM_KEYS = ("shift", "rotate", "noise", "seed")
_PREDICT_LOCK = threading.Lock()
"""The layers keep their last input for backpropagation: one prediction at a time."""


class RequestError(Exception):
    """A request the playground refuses: an HTTP status (4xx) and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message


@dataclass
class Stage:
    """A trained stage the playground asks: its name as in the comparison table ("04_adam"), its
    title ("Adam") and what it adds, its network and the pixel scale it was trained on."""

    name: str
    title: str
    adds: str
    network: Network
    pixel_scale: str


@dataclass(frozen=True)
class Transform:
    """What to do to the prepared 28 x 28 digit, in this order: rotate (degrees, counter-clockwise,
    about the image centre), shift (whole pixels: dx right, dy down), add Gaussian noise (standard
    deviation on the 0..1 scale, drawn from ``seed``)."""

    rotate: float = 0.0
    shift: tuple[int, int] = (0, 0)
    noise: float = 0.0
    seed: int = 0


# --------------------------------------------------------------------------- models

def load_stages(models_dir: Path) -> tuple[list[Stage], list[str], list[str]]:
    """Every ``models_dir/*/model.npz``, read with :func:`common.predict.load_model`, in stage order.

    Returns ``(stages, problems, missing)``: the loaded stages, one line per model that could not
    be read, and the names of the numbered stage scripts that have no model in ``models_dir``.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise UserError(f"--models-dir {models_dir} is not a folder; it should hold <stage>/model.npz "
                        "(train a stage first: python stages/04_adam.py)")
    specs = {spec.name: spec for spec in load_specs().values()}
    stages, problems = [], []
    for path in sorted(models_dir.glob("*/model.npz")):
        try:
            network, metadata = load_model(path)
        except UserError as error:
            problems.append(str(error))
            continue
        except Exception as error:  # whatever no check foresaw: skip that model too, in one line
            reason = (str(error).splitlines() or [""])[0][:200]
            problems.append(f"{path}: cannot be read ({type(error).__name__}: {reason})")
            continue
        spec = specs.get(path.parent.name)
        stages.append(Stage(path.parent.name, spec.title if spec else "", spec.adds if spec else "",
                            network, metadata["pixel_scale"]))
    loaded = {stage.name for stage in stages}
    return stages, problems, [name for name in specs if name not in loaded]


def report_stages(stages: Sequence[Stage], problems: Sequence[str], missing: Sequence[str],
                  models_dir: Path) -> None:
    """Print what was loaded, what could not be, and how to train the stages with no model."""
    for problem in problems:
        print(f"skipped: {problem}")
    for name in missing:
        print(f"missing {name}: no model in {shown(models_dir)}; train it with: python stages/{name}.py")
    if not stages:
        raise UserError(f"no trained model in {shown(models_dir)} (<stage>/model.npz); "
                        "train a stage first, e.g. python stages/04_adam.py")
    names = [stage.name for stage in stages]
    print(f"loaded {len(names)} stage{'s' if len(names) > 1 else ''} from {shown(models_dir)}: "
          f"{', '.join(names)}")


# --------------------------------------------------------------------------- one prediction

def request_image(data_url: object) -> np.ndarray:
    """A ``"data:image/png;base64,..."`` URL -> grayscale float32 ``(H, W)`` in [0, 1], decoded as
    ``python -m common.predict`` decodes a file (:func:`common.predict.decode_image`)."""
    if not isinstance(data_url, str):
        raise RequestError(400, 'no "image": send the canvas as "data:image/png;base64,..."')
    header, _, payload = data_url.partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        raise RequestError(400, '"image" must be a data URL such as "data:image/png;base64,..."')
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, '"image" is not valid base64') from None
    try:
        return decode_image(io.BytesIO(raw), '"image"', IMAGE_FORMATS, MAX_IMAGE_PIXELS)
    except MissingPackage as error:  # the server's set-up, not the request, is at fault
        raise RequestError(500, str(error)) from None
    except UserError as error:
        raise RequestError(400, str(error)) from None


def _number(raw: dict, key: str, low: float, high: float) -> float:
    """``raw[key]`` (0 when absent) as a number in ``[low, high]``, else a 400."""
    value = raw.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(400, f'transform "{key}" must be a number from {low:g} to {high:g}')
    return float(value)


def parse_transform(raw: object) -> Transform:
    """The optional ``"transform"`` object of a request, checked; None or absent -> no transform."""
    if raw is None:
        return Transform()
    if not isinstance(raw, dict):
        raise RequestError(400, '"transform" must be an object such as {"shift": [1, 0], "rotate": 15, "noise": 0.1}')
    unknown = sorted(set(raw) - set(TRANSFORM_KEYS))
    if unknown:
        raise RequestError(400, f"unknown transform key {', '.join(map(repr, unknown))}; "
                                f"use {', '.join(TRANSFORM_KEYS)}")
    shift = raw.get("shift", [0, 0])
    if not (isinstance(shift, list) and len(shift) == 2
            and all(not isinstance(v, bool) and isinstance(v, int) and abs(v) <= IMAGE_SIDE for v in shift)):
        raise RequestError(400, f'transform "shift" must be [dx, dy], whole pixels from -{IMAGE_SIDE} to {IMAGE_SIDE}')
    return Transform(rotate=_number(raw, "rotate", -360, 360), shift=(shift[0], shift[1]),
                     noise=_number(raw, "noise", 0, 1), seed=int(_number(raw, "seed", 0, 2 ** 32 - 1)))


def apply_transform(pixels: np.ndarray, transform: Transform) -> np.ndarray:
    """Rotate, shift and add noise to a prepared digit, uint8 ``(784,)`` -> uint8 ``(784,)``, with
    the transforms of :mod:`common.robustness` (float images in [0, 1])."""
    if transform == Transform():
        return pixels
    image = pixels[None, :].astype(np.float32) / np.float32(255.0)  # (1, 784)
    if transform.rotate:
        image = robustness.rotate(image, transform.rotate)
    dx, dy = transform.shift
    image = robustness.shift_images(image, dy, dx)
    if transform.noise:
        image = robustness.gaussian_noise(image, np.random.default_rng(transform.seed), transform.noise)
    return np.rint(np.clip(image[0], 0.0, 1.0) * 255.0).astype(np.uint8)


def predict_all(stages: Sequence[Stage], pixels: np.ndarray) -> list[dict]:
    """Each stage's name, title and probabilities ``(10,)`` for one prepared digit ``pixels`` uint8
    ``(784,)``, through :func:`common.predict.classify` (each network's own pixel scale)."""
    with _PREDICT_LOCK:
        return [{"name": stage.name, "title": stage.title, "adds": stage.adds,
                 "probabilities": [round(float(p), 7) for p in classify(pixels, stage.network, stage.pixel_scale)]}
                for stage in stages]


def answer(stages: Sequence[Stage], body: bytes) -> dict:
    """The JSON reply to a ``POST /predict`` body; raises :class:`RequestError` for a bad request."""
    started = time.perf_counter()
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, f"malformed JSON ({str(error).splitlines()[0]})") from None
    except RecursionError:
        raise RequestError(400, "malformed JSON (nested too deeply)") from None
    if not isinstance(request, dict):
        raise RequestError(400, 'the body must be a JSON object {"image": "data:image/png;base64,..."}')
    unknown = sorted(set(request) - {"image", "transform"})
    if unknown:
        raise RequestError(400, f"unknown key {', '.join(map(repr, unknown))}; send image and transform")
    image = request_image(request.get("image"))  # (H, W) in [0, 1]
    transform = parse_transform(request.get("transform"))
    try:
        pixels = preprocess_image(image)  # uint8 (784,), the one preprocessing of common.predict
    except UserError as error:
        if str(error).startswith(BLANK_PREFIX):
            return {"blank": True, "milliseconds": _since(started)}
        raise RequestError(400, str(error)) from None
    pixels = apply_transform(pixels, transform)
    answers = predict_all(stages, pixels)
    return {"input": pixels.tolist(), "stages": answers, "milliseconds": _since(started)}


def answer_in_turn(stages: Sequence[Stage], body: bytes) -> dict:
    """:func:`answer`, once one of the :data:`WORK_SLOTS` is free; a 503 after :data:`QUEUE_SECONDS`."""
    if not WORK_SLOTS.acquire(timeout=QUEUE_SECONDS):
        raise RequestError(503, f"busy: {MAX_CONCURRENT} drawings are being read and others are waiting; "
                                "try again in a moment")
    try:
        return answer(stages, body)
    finally:
        WORK_SLOTS.release()


def _since(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()``), to 0.01 ms."""
    return round(1000.0 * (time.perf_counter() - started), 2)


def warm_up(stages: Sequence[Stage], rounds: int = 5) -> float:
    """Ask every stage about a blank digit ``rounds`` times (the first calls wake up the BLAS
    threads); returns the last round's milliseconds for all stages."""
    pixels = np.zeros(IMAGE_SIDE * IMAGE_SIDE, dtype=np.uint8)
    for _ in range(rounds):
        started = time.perf_counter()
        predict_all(stages, pixels)
    return _since(started)


# --------------------------------------------------------------------------- HTTP

def host_allowed(host: str, served: str) -> bool:
    """True if a ``Host`` header value names this machine: one of :data:`LOOPBACK_NAMES` or
    ``served`` (the address listened on), with or without a port."""
    name, colon, port = host.rpartition(":")
    if not (colon and name and port.isascii() and port.isdigit() and len(port) <= 5):
        name = host  # no port ("[::1]" ends in "]"), or not a valid one, which then matches no name
    return name.lower() in (*LOOPBACK_NAMES, served.lower())


def content_length(declared: str) -> int:
    """The number of bytes a ``Content-Length`` value declares: ASCII digits only, since
    ``str.isdigit`` also takes "²" (a 400 otherwise), far over 1 MB when very long (a 413)."""
    text = declared.strip(" \t")
    if not re.fullmatch(r"[0-9]+", text):
        raise RequestError(400, f"Content-Length {declared[:20]!r} is not a whole number of bytes")
    digits = text.lstrip("0") or "0"
    if len(digits) > MAX_LENGTH_DIGITS:
        raise RequestError(413, f"Content-Length has {len(digits)} digits; the body may have at most "
                                f"{MAX_BODY_BYTES:,} bytes (1 MB)")
    return int(digits)


def static_file(request_path: str) -> Path | None:
    """The file of ``common/playground_static/`` a GET path names (``/`` is ``index.html``), or None.

    Only ``/`` and ``/static/<name>`` for a name in :data:`STATIC_NAMES`: no listing, no other
    file, no ``..`` or encoded path can reach anything else.
    """
    path = urlsplit(request_path).path
    name = "index.html" if path == "/" else path.removeprefix("/static/") if path.startswith("/static/") else ""
    return STATIC_DIR / name if name in STATIC_NAMES else None


class PlaygroundServer(ThreadingHTTPServer):
    """A threading HTTP server holding the loaded stages; quiet about clients that hang up."""

    daemon_threads = True
    allow_reuse_port = False  # a second server on the same port must fail, not share it
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        super().__init__(address, PlaygroundHandler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host name (slow on some machines)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: object, client_address: tuple) -> None:
        """A client that hangs up is not news; anything else is one line on stderr, not a traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(f"playground: error answering {client_address[0]}: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)


class PlaygroundHandler(BaseHTTPRequestHandler):
    """``GET /``, ``GET /static/<name>``, ``POST /predict``; every error as one-line JSON."""

    server: PlaygroundServer
    protocol_version = "HTTP/1.1"
    server_version = "mnist-playground"
    timeout = 30  # seconds a silent client may hold a connection

    def version_string(self) -> str:
        """The Server header: the playground's name, not the Python version."""
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        """Silent: no line per request."""

    def do_GET(self) -> None:
        """The page or one of its assets; 405 on ``/predict``, 404 elsewhere."""
        if not self._host_checked():
            return None
        path = static_file(self.path)
        if path is None:
            if urlsplit(self.path).path == "/predict":
                return self._refuse(405, "use POST /predict with a JSON body", allow="POST")
            return self.send_error(404, f"no page {urlsplit(self.path).path[:80]!r}; open /")
        headers = [("Content-Security-Policy", CONTENT_SECURITY_POLICY)] if path.suffix == ".html" else []
        self._send(200, path.read_bytes(), CONTENT_TYPES[path.suffix], headers)

    do_HEAD = do_GET  # the same headers, no body (see _send)

    def do_POST(self) -> None:
        """``POST /predict``: read the JSON body (at most 1 MB) and answer; 405/404 elsewhere."""
        if not self._host_checked():
            return None
        if urlsplit(self.path).path != "/predict":
            if static_file(self.path) is not None:
                return self._refuse(405, "this path only answers GET", allow="GET, HEAD")
            return self.send_error(404, f"no route {urlsplit(self.path).path[:80]!r}; POST to /predict")
        try:
            reply = answer_in_turn(self.server.stages, self._read_body())
        except RequestError as error:
            return self.send_error(error.status, error.message)
        except Exception as error:  # a bug reaches the page as one line, never a traceback
            return self.send_error(500, f"internal error: {type(error).__name__}: {error}")
        self._send(200, json.dumps(reply).encode("utf-8"), "application/json")

    def _read_body(self) -> bytes:
        """The request body, after checking its length (411 missing, 413 over 1 MB) and type (415)."""
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "send the body with a Content-Length, not chunked")
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError(411, "Content-Length required")
        length = content_length(declared)
        if length > MAX_BODY_BYTES:
            self._discard(length)
            raise RequestError(413, f"the body is {length:,} bytes; at most {MAX_BODY_BYTES:,} (1 MB)")
        if self.headers.get_content_type() != "application/json":
            raise RequestError(415, "send the body as Content-Type: application/json")
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(408, f"the body did not arrive within {self.timeout} s") from None
        if len(body) < length:
            raise RequestError(400, f"the body ended after {len(body)} of {length} bytes")
        return body

    def _host_checked(self) -> bool:
        """True if the request names this machine in exactly one ``Host`` header; else answer it
        (400 without one, 421 for another name, after dropping a small body) and return False."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            self.send_error(400, f"send exactly one Host header (got {len(hosts)})")
            return False
        if host_allowed(hosts[0].strip(), str(self.server.server_address[0])):
            return True
        try:
            self._discard(min(content_length(self.headers.get("Content-Length", "0")), MAX_BODY_BYTES))
        except RequestError:
            pass
        port = self.server.server_address[1]
        self.send_error(421, f"Host {hosts[0][:60]!r} is not this machine; the playground answers only "
                             f"http://127.0.0.1:{port}/ (or localhost)")
        return False

    def _discard(self, length: int) -> None:
        """Read and drop a refused body of up to :data:`DRAIN_BYTES`, so the client, still sending
        it, gets the answer rather than a reset connection; a larger one is left unread."""
        left = length if length <= DRAIN_BYTES else 0
        while left > 0:
            try:
                chunk = self.rfile.read(min(left, 65536))
            except OSError:  # the client stopped sending (timeout) or hung up: answer anyway
                return
            if not chunk:
                return
            left -= len(chunk)

    def _send(self, status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Send a complete response (no body for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _refuse(self, status: int, message: str, allow: str | None = None) -> None:
        """An error as one-line JSON ``{"error": message}``; the connection closes after it (an
        unread body must not be taken for the next request)."""
        text = " ".join(str(message).split())[:300]
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unreadable request line: still send a status line
            self.request_version = "HTTP/1.0"
        headers = [("Connection", "close")] + ([("Allow", allow)] if allow else [])
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            headers.append(("Retry-After", "1"))
        self._send(status, (json.dumps({"error": text}) + "\n").encode("utf-8"), "application/json", headers)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Every error, http.server's own included (bad request line, unknown method), as JSON."""
        if code == HTTPStatus.NOT_IMPLEMENTED:  # http.server's answer to an unknown method
            method = str(self.command or "")[:20]
            return self._refuse(405, f"method {method} not allowed; use GET, or POST /predict",
                                allow="GET, HEAD, POST")
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._refuse(code, message or phrase)


def make_server(stages: Sequence[Stage], port: int = DEFAULT_PORT, host: str = HOST) -> PlaygroundServer:
    """A playground server bound to ``host:port`` (0: any free port), not yet serving.

    A port already in use, or one this user may not open, is a one-line :class:`UserError`.
    """
    try:
        return PlaygroundServer((host, port), stages)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is already in use (another playground?); "
                            "choose another with --port, e.g. --port 8001") from None
        if error.errno == errno.EACCES:
            raise UserError(f"not allowed to listen on port {port}; choose one from 1024 up") from None
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


# --------------------------------------------------------------------------- CLI

def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 0 to 65535, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m common.playground",
                           description="Draw a digit in the browser; every trained stage answers side by side.")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help=f"port on {HOST} (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                        help="folder holding <stage>/model.npz (default results/stages)")
    args = parser.parse_args(argv)
    require_pillow("the playground (to read drawings)")
    server = make_server([], args.port)  # a port in use fails before anything is loaded
    try:
        stages, problems, missing = load_stages(args.models_dir)
        report_stages(stages, problems, missing, args.models_dir)
        server.stages = stages
        print(f"one prediction for all {len(stages)} stages: {warm_up(stages):.1f} ms", flush=True)
        host, port = server.server_address[:2]
        try:  # the address is printed inside: a Ctrl-C that follows it at once still stops cleanly
            print(f"playground at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
            server.serve_forever()
        except KeyboardInterrupt:
            print("playground stopped", flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
