"""`--log-format json`: one JSON object per line, structured fields kept, tracebacks inside."""

from __future__ import annotations

import json
import logging
import sys

from etcd_registrar.logs import JsonFormatter


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("etcd_registrar.registry", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_line_is_one_json_object_with_the_fields_given() -> None:
    fields = {"key": "/services/goods/a", "pod": "a", "namespace": "shop", "service": "goods"}
    line = JsonFormatter().format(record("put %s", "/services/goods/a", **fields))
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed | fields == parsed  # every field kept as given
    assert parsed["message"] == "put /services/goods/a"
    assert (parsed["level"], parsed["logger"]) == ("info", "etcd_registrar.registry")
    assert parsed["time"].endswith("+00:00")


def test_kopf_object_references_and_exceptions_stay_inside_the_line() -> None:
    rec = record("failed", k8s_ref={"kind": "Pod", "name": "a"}, k8s_skip=True, settings=object())
    try:
        raise ValueError("boom")
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = JsonFormatter().format(rec)
    parsed = json.loads(line)
    assert "\n" not in line
    assert parsed["object"] == {"kind": "Pod", "name": "a"}
    assert "ValueError: boom" in parsed["exception"]
    assert not {"k8s_ref", "k8s_skip", "settings"} & parsed.keys()  # kopf internals left out
