"""`POST /explain`: one image's prediction and its occlusion-sensitivity heat map, as JSON or as a PNG overlay.

The upload, its limits and every error are /predict's (the same helpers). The 65-image batch skips the
micro-batcher: it is a whole batch already, and in the batcher it would hold up the single images queued behind it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from cifar10_classifier.explain import Explanation, occlusion_map, render_overlay
from cifar10_classifier.preprocess import ImageDecodeError
from cifar10_classifier.serve.context import ServerContext
from cifar10_classifier.serve.errors import ApiError, JSONBytesResponse, from_decode_error
from cifar10_classifier.serve.model import ModelRunner
from cifar10_classifier.serve.routes.predict import (
    model_info,
    ms,
    multipart_body,
    query_value,
    read_one_upload,
    top_k_of_request,
)
from cifar10_classifier.serve.schemas import ExplanationResponse, error_responses

router = APIRouter(tags=["explain"])

FORMATS = ("json", "png")
_UPLOAD_ERRORS = error_responses(400, 413, 415, 422, 429, 503, 504)


def _openapi() -> dict[str, Any]:
    extra = multipart_body("file", many=False)
    extra["parameters"].append(
        {
            "name": "format",
            "in": "query",
            "required": False,
            "description": "json (default): the prediction and the heat map; png: the image with the map on top",
            "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
        }
    )
    return extra


def format_of_request(request: Request) -> str:
    """`?format=json|png`, errors in the API's shape."""
    value = query_value(request, "format")
    if value is None:
        return "json"
    if value not in FORMATS:
        raise ApiError(422, "invalid_request", f"format must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class _Explained:
    explanation: Explanation
    png: bytes | None
    decode_s: float
    inference_s: float


def _explain(runner: ModelRunner, data: bytes, top_k: int, as_png: bool) -> _Explained:
    """Blocking (decode, one batched model call, maybe a PNG): runs in a worker thread."""
    started = time.perf_counter()
    image = runner.decode(data)
    decoded = time.perf_counter()
    explanation = occlusion_map(runner.predictor, image, top_k=top_k)
    inferred = time.perf_counter()
    png = render_overlay(image, explanation.heatmap) if as_png else None
    return _Explained(explanation, png, decoded - started, inferred - decoded)


@router.post(
    "/explain",
    summary="Why this class: a heat map",
    description='One image as multipart/form-data field "file", as for /predict. Each cell of an 8x8 grid is hidden '
    "in turn (filled with the training mean colour); a cell's value is how much that lowers the predicted class's "
    "probability, scaled so the strongest cell is 1. With `format=png`: the image at 256x256 with the map on top.",
    response_class=JSONBytesResponse,
    responses={
        200: {
            "model": ExplanationResponse,
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **_UPLOAD_ERRORS,
    },
    openapi_extra=_openapi(),
)
async def explain(request: Request) -> Response:
    started = time.perf_counter()
    context: ServerContext = request.app.state.context
    predictor = context.require_ready()
    top_k = top_k_of_request(request, context.settings.default_top_k)
    as_png = format_of_request(request) == "png"
    data = await read_one_upload(request, context)
    runner = context.model.runner
    assert runner is not None  # require_ready() above
    try:
        result = await asyncio.to_thread(_explain, runner, data, top_k, as_png)
    except ImageDecodeError as error:
        raise from_decode_error(error) from None
    timing = {
        "decode": ms(result.decode_s),
        "inference": ms(result.inference_s),
        "total": ms(time.perf_counter() - started),
    }
    server_timing = ", ".join(f"{name};dur={value}" for name, value in timing.items())
    if result.png is not None:
        return Response(result.png, media_type="image/png", headers={"Server-Timing": server_timing})
    body = result.explanation.to_dict()
    body["model"] = model_info(predictor)
    body["timing_ms"] = timing
    return JSONBytesResponse(body, headers={"Server-Timing": server_timing})
