"""Property: no annotation, registration field or template, however hostile, raises past
the validation layer, and whatever renders is a key this registration may write and a
request the etcd client can encode (issues #10 and #11)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcd_registrar import ANNOTATION_METADATA, ANNOTATION_PORT, ANNOTATION_SERVICE
from etcd_registrar.etcd import PutOp, _request_op
from etcd_registrar.formats import FORMATS, is_reserved
from etcd_registrar.source import Defaults, PodView, Registration, desired_for_pod
from tests.unit.builders import pod_body, registration_body

# Any code point, lone surrogates and controls included: what JSON escapes can produce.
text = st.text(st.characters(codec=None, categories=None), max_size=40)
names = st.sampled_from(["goods", "a..b", "Goods", "x" * 64, "", "-a", "a.b", "etcd-registrar"])
placeholders = st.sampled_from(
    ["{prefix}", "{service}", "{pod}", "{namespace}", "{ip}", "{port}", "{address}", "{uid}"]
)
templates = st.lists(st.one_of(placeholders, text, st.sampled_from(["/", "..", "{", "}"])))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=10,
)
metadata_text = st.one_of(
    text,
    json_values.map(json.dumps),
    st.integers(1, 3000).map(lambda n: "[" * n + "]" * n),
    st.dictionaries(text, text, max_size=4).map(lambda d: json.dumps(d, ensure_ascii=True)),
)
pod_annotation_sets = st.fixed_dictionaries(
    {},
    optional={
        ANNOTATION_SERVICE: st.one_of(names, text),
        ANNOTATION_PORT: st.one_of(text, st.sampled_from(["80", "٨٠", "http", "0", "65536"])),
        ANNOTATION_METADATA: metadata_text,
    },
)
specs = st.fixed_dictionaries(
    {},
    optional={
        "service": st.one_of(names, text),
        "format": st.one_of(st.sampled_from(FORMATS), text),
        "prefix": st.one_of(
            st.sampled_from(["", "/", "/apps", "/etcd-registrar", "/etcd-registrar/x/leases"]),
            text,
        ),
        "key": templates.map("".join),
        "value": templates.map("".join),
        "metadata": st.one_of(st.dictionaries(text, text, max_size=3), json_values),
        "port": st.one_of(st.integers(), text),
        "ttl": st.one_of(st.integers(), text),
        "zone": text,
        "selector": st.one_of(st.just({"matchLabels": {"app": "goods"}}), json_values),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pod_annotations=pod_annotation_sets, spec=specs, pod_name=text)
def test_hostile_input_never_escapes_validation(
    pod_annotations: dict[str, str], spec: dict[str, Any], pod_name: str
) -> None:
    defaults = Defaults()
    pod = PodView.from_body(
        pod_body(name=pod_name or "p", annotations=pod_annotations, labels={"app": "goods"})
    )
    registration = Registration.from_body(registration_body(spec), defaults)
    endpoints = desired_for_pod(pod, [registration], defaults).endpoints
    for endpoint in endpoints:
        ours = endpoint.service == registration.service and registration.layout is not None
        governing = registration.layout if ours else defaults.layout
        assert governing is not None
        assert not is_reserved(endpoint.key)
        assert endpoint.key.startswith(governing.root(endpoint.service))
        _request_op(PutOp(endpoint.key, endpoint.value, 1))  # encodes, or this raises
