"""Structured (JSON lines) logging. Records carry request ids and outcomes, never image or mask bytes."""

from __future__ import annotations

import json
import logging
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("facecloak")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
