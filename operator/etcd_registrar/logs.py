"""Log output of `etcd-registrar run`: human text by default, one JSON object per line with
`--log-format json`.

A JSON line carries `time`, `level`, `logger` and `message`, then the record's structured
fields: every line about a key has `key`, `pod`, `namespace` and `service` (see
registry.py); kopf's lines about an object carry it as `object`. Exceptions are a field too
(`exception`), so a traceback never breaks the one-object-per-line rule.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal

# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_KOPF_INTERNAL = {"k8s_skip", "k8s_ref", "settings"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ref = getattr(record, "k8s_ref", None)
        if ref:
            entry["object"] = ref
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in _KOPF_INTERNAL and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure(log_format: Literal["text", "json"], level: str = "info") -> None:
    """Set up logging for `run` (kopf's handler and text format, or our JSON) at `level`."""
    import kopf

    # kopf's debug mode also lets asyncio's own log lines through.
    kopf.configure(debug=level == "debug", log_format=kopf.LogFormat.FULL)
    root = logging.getLogger()
    root.setLevel(level.upper())
    if log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
        # Whatever would be printed raw goes through the JSON formatter instead.
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda args: _log_uncaught(
            args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback
        )
    logging.captureWarnings(True)
    # kopf logs every handler success at INFO: one line per pod event is noise at scale.
    if level != "debug":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("etcd_registrar").critical("uncaught exception", exc_info=(kind, exc, tb))
