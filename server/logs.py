"""Structured (JSON lines) logging. Records carry request ids and outcomes, never image or mask bytes."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

# Extra fields a log call may attach (logger.info(..., extra={...})); anything else is dropped.
FIELDS = ("request_id", "method", "key_id", "code", "reason", "duration_ms", "queue_ms", "masks", "port", "target",
          "models", "seconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: getattr(record, k) for k in FIELDS if hasattr(record, k)})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """JSON lines on stderr for our loggers and gRPC's Python loggers; gRPC's C core kept quiet.

    The C core writes plain-text lines straight to stderr, past Python's logging, so they cannot be
    made JSON: it is silenced unless the operator sets GRPC_VERBOSITY (ERROR, INFO, DEBUG) to debug
    it. Must run before the first gRPC server or channel starts the core.
    """
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name, threshold in (("facecloak", level.upper()), ("grpc", "WARNING")):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(threshold)
        logger.propagate = False
