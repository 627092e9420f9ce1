"""``facecloak-server``: run the enrollment service until SIGINT/SIGTERM, then drain gracefully."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence

from ..command import run_command
from ..errors import FaceCloakError
from .config import ServerConfig, load_config
from .logs import configure_logging

log = logging.getLogger("facecloak.server")


class ServerStartError(FaceCloakError):
    """The service could not start (port taken, TLS files unreadable, ...)."""

    reason = "START_FAILED"
    exit_code = 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("facecloak-server", lambda: serve(load_config(argv)))


def serve(config: ServerConfig) -> int:
    """Start the service with ``config`` and block until SIGINT/SIGTERM, then drain."""
    configure_logging(config.log_level)
    from ..models.weights import flush_subnormals
    from .app import FaceCloakServer  # heavy imports (torch) only once the flags are valid

    flush_subnormals()  # before any worker thread exists (PyTorch, ONNX Runtime, gRPC), so all inherit it
    try:
        server = FaceCloakServer(config)
        port = server.start()
    except (OSError, RuntimeError) as exc:
        raise ServerStartError(str(exc)) from None
    # One plain line on stdout so scripts can find the port when --port 0 was asked for.
    print(f"facecloak-server listening on {config.host}:{port}" + (f" metrics :{server.metrics_port}"
                                                                   if server.metrics_port else ""), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):  # short waits keep the main thread responsive to signals
        pass
    log.info("shutting down", extra={"seconds": config.grace_seconds})
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
