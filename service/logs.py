"""Structured logs: one JSON object per line, for gunicorn's own messages and the app's.

Access lines go to stdout (logger ``linescore.access``), everything else to stderr. Extra fields
travel in ``extra={"fields": {...}}`` and become top-level keys of the line.
"""

import logging
from datetime import UTC, datetime

import orjson

ACCESS = "linescore.access"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def logconfig_dict() -> dict:
    """gunicorn's ``logconfig_dict``: every logger of the server writes JSON lines."""

    def stream(name: str) -> dict:
        return {"class": "logging.StreamHandler", "formatter": "json", "stream": name}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": stream("ext://sys.stderr"), "stdout": stream("ext://sys.stdout")},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            # gunicorn's access line is not JSON-safe; the app writes its own (linescore.access)
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            ACCESS: {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }
