"""Operations routes, the error shape for unknown routes and methods, the docs and the page's files."""

from __future__ import annotations

import serve_support as images
from serve_support import upload


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["model"] == {"name": "tiny-test-model", "version": "0"}


def test_metrics_in_prometheus_text_format(client):
    client.post("/predict", files=upload(images.tile_png()))
    client.post("/predict", files=upload(b"junk"))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "cifar10_http_requests_total",
        "cifar10_http_request_duration_seconds_bucket",
        "cifar10_batch_size_bucket",
        "cifar10_batch_queue_wait_seconds_bucket",
        "cifar10_http_requests_in_flight",
    ):
        assert name in text, name
    assert 'route="/predict",status="200"' in text and 'route="/predict",status="415"' in text


def test_unknown_paths_share_one_metrics_label(client):
    client.get("/random-scan-1")
    client.get("/random-scan-2")
    text = client.get("/metrics").text
    assert "random-scan" not in text and 'route="(unmatched)"' in text


def test_unknown_route_is_404_and_wrong_method_is_405_in_the_error_shape(client):
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "no route /nope"}}
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]
    assert client.put("/healthz").status_code == 405


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    for path in ("/predict", "/predict/batch", "/v2", "/v2/models/{name}/infer", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["file"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    # Offline docs: every asset comes from the app itself, none from a CDN.
    assert "cdn" not in docs.text.lower() and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/swagger/swagger-ui.css").status_code == 200


def test_the_page_and_its_files_are_served_by_the_app(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert "http://" not in html and "https://" not in html  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200 and "https://" not in response.text
    assert "innerHTML" not in client.get("/static/app.js").text  # names and answers go in as text only
