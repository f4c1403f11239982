"""``/healthz`` for a running worker: the liveness probe of Kubernetes, systemd or a load balancer.

``sqla-boss work --health-port 8080`` serves it; :class:`HealthServer` serves it for a worker of your own. A
``GET /healthz`` answers ``200`` when :meth:`Worker.health <sqla_boss.Worker.health>` says the worker is
healthy and ``503`` when not, with the health as JSON either way (each loop's last successful fetch, whether a
handler is running, failures in a row). Any other path is ``404``.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from sqla_boss.errors import InvalidOptionError
from sqla_boss.handling import Health
from sqla_boss.options.values import integer

logger = logging.getLogger("sqla_boss.health")

PATHS = ("/healthz", "/livez")
"""The paths that answer with the health."""


class Reporting(Protocol):
    """What a health server asks of a worker: :class:`~sqla_boss.Worker` and :class:`~sqla_boss.AsyncWorker`."""

    def health(self) -> Health: ...


class HealthServer:
    """Serves a worker's health over HTTP on a daemon thread of its own, until :meth:`close`.

    Args:
        worker: the worker to report on (its :meth:`health` reads its state only, from this thread).
        port: the TCP port; 0 picks a free one (see :attr:`port`).
        host: the address to listen on; the default, every address, is what a probe from outside the
            container needs. The answer holds queue names and timings, nothing else.

    Raises:
        InvalidOptionError: a port outside 0-65535, or one that cannot be listened on (in use, privileged).
    """

    def __init__(self, worker: Reporting, port: int, host: str = "0.0.0.0") -> None:
        integer("health port", port, minimum=0, maximum=65535)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in PATHS:
                    self._answer(404, {"error": f"not found; ask {PATHS[0]}"})
                    return
                health = worker.health()
                self._answer(200 if health.healthy else 503, health.as_dict())

            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug(format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise InvalidOptionError(f"cannot serve health on {host}:{port}: {exc.strerror or exc}") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sqla_boss-health", daemon=True)
        self._thread.start()
        logger.info("serving %s on %s port %d", PATHS[0], host, self.port)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


__all__ = ["PATHS", "HealthServer", "Reporting"]
