"""Property test of the whole API from its own OpenAPI document (schemathesis), with a bounded number of examples.

Every generated request - valid or not - must get a documented status, a documented content type and a body
that matches the documented schema, and never a 5xx.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from serve_support import build_tiny_onnx  # noqa: E402

from cifar10_classifier.serve.app import create_app  # noqa: E402
from cifar10_classifier.serve.settings import Settings  # noqa: E402


def _app(tmp_dir):
    model = build_tiny_onnx(tmp_dir / "tiny.onnx")
    # Small limits keep generated bodies cheap; the timeout would turn a hang into a documented 504.
    return create_app(Settings(model=model, max_upload_bytes=256 * 1024, request_timeout_s=5))


# Built at import (schemathesis reads the schema while collecting); removed when the process ends.
_MODEL_DIR = tempfile.TemporaryDirectory(prefix="schemathesis-model-")
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(Path(_MODEL_DIR.name)))


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_schema(case):
    response = case.call()
    assert response.status_code < 500, response.text
    case.validate_response(
        response, checks=[status_code_conformance, content_type_conformance, response_schema_conformance]
    )
