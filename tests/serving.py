"""``in_a_thread``: a test's HTTP server serving from a daemon thread, shut down and closed afterwards."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from socketserver import BaseServer


@contextlib.contextmanager
def in_a_thread(server: BaseServer) -> Iterator[BaseServer]:
    """Serve ``server`` in a daemon thread for the ``with`` block; then stop it and free its port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
