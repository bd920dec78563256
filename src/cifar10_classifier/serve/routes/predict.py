"""`POST /predict` (one image) and `POST /predict/batch` (several, one result or error each, in order)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from cifar10_classifier.inference import top_k_of
from cifar10_classifier.serve.context import ServerContext
from cifar10_classifier.serve.errors import ApiError, JSONBytesResponse
from cifar10_classifier.serve.model import ItemResult, PredictorLike
from cifar10_classifier.serve.schemas import BatchResponse, PredictionResponse, error_responses
from cifar10_classifier.serve.uploads import read_files

router = APIRouter(tags=["predict"])

MAX_TOP_K = 10
_UPLOAD_ERRORS = error_responses(400, 413, 415, 422, 429, 503, 504)


def query_value(request: Request, name: str) -> str | None:
    """The last `?name=` value, or None. Parsed by hand: FastAPI's per-request parameter machinery costs more than
    the rest of the route on a 32x32 upload. Each route documents its parameters in its OpenAPI extra."""
    query = request.scope.get("query_string")
    if not query:
        return None
    values = [value for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True) if key == name]
    return values[-1] if values else None


def top_k_of_request(request: Request, default: int) -> int:
    """`?top_k=K`, errors in the API's shape."""
    value = query_value(request, "top_k")
    if value is None:
        return default
    try:
        k = int(value)
    except ValueError:
        k = 0
    if not 1 <= k <= MAX_TOP_K:
        raise ApiError(422, "invalid_request", f"top_k must be a whole number from 1 to {MAX_TOP_K}, not {value!r}")
    return k


def multipart_body(field: str, many: bool) -> dict[str, Any]:
    file_schema = {"type": "string", "format": "binary"}
    schema = {"type": "array", "items": file_schema, "minItems": 1} if many else file_schema
    return {
        "parameters": [
            {
                "name": "top_k",
                "in": "query",
                "required": False,
                "description": "how many classes to return (default 3)",
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 3},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": [field], "properties": {field: schema}},
                }
            },
        },
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _prediction(result: ItemResult, predictor: PredictorLike, top_k: int) -> dict[str, Any]:
    ood_score = None if result.ood_scores is None else float(result.ood_scores[0])
    threshold = getattr(predictor, "ood_threshold", None)
    body = top_k_of(result.probabilities[0], predictor.classes, top_k, ood_score, threshold).to_dict()
    body["timing_ms"] = {"decode": ms(result.decode_s), "inference": ms(result.inference_s)}
    return body


def empty_file() -> ApiError:
    return ApiError(422, "empty_file", "the uploaded file is empty")


async def read_one_upload(request: Request, context: ServerContext) -> bytes:
    """The bytes of a single-image route's field "file"; 422 when it is empty."""
    settings = context.settings
    parts = await read_files(request, ("file",), settings.max_upload_bytes, settings.max_files_per_request)
    if not parts[0].data:
        raise empty_file()
    return parts[0].data


def model_info(predictor: PredictorLike) -> dict[str, str]:
    return {"name": predictor.name, "version": predictor.version}


@router.post(
    "/predict",
    summary="Classify one image",
    description='One image as multipart/form-data field "file": PNG, JPEG, GIF, WebP, BMP, TIFF... any size '
    "within the limits. It is decoded, resized to 32x32 and normalized exactly as in training.",
    response_class=JSONBytesResponse,
    responses={200: {"model": PredictionResponse}, **_UPLOAD_ERRORS},
    openapi_extra=multipart_body("file", many=False),
)
async def predict(request: Request) -> Response:
    started = time.perf_counter()
    context: ServerContext = request.app.state.context
    predictor = context.require_ready()
    top_k = top_k_of_request(request, context.settings.default_top_k)
    result = await context.infer(await read_one_upload(request, context))
    body = _prediction(result, predictor, top_k)
    body["model"] = model_info(predictor)
    body["timing_ms"]["total"] = ms(time.perf_counter() - started)
    return JSONBytesResponse(body)


@router.post(
    "/predict/batch",
    summary="Classify several images",
    description='Several images as repeated multipart/form-data fields "files" (or "file"). One entry per file, in '
    "order: a prediction, or an error for that file alone.",
    response_class=JSONBytesResponse,
    responses={200: {"model": BatchResponse}, **_UPLOAD_ERRORS},
    openapi_extra=multipart_body("files", many=True),
)
async def predict_batch(request: Request) -> Response:
    started = time.perf_counter()
    context: ServerContext = request.app.state.context
    predictor = context.require_ready()
    settings = context.settings
    k = top_k_of_request(request, settings.default_top_k)
    parts = await read_files(request, ("files", "file"), settings.max_upload_bytes, settings.max_files_per_request)

    async def one(data: bytes) -> dict[str, Any]:
        try:
            if not data:
                raise empty_file()
            return _prediction(await context.infer(data), predictor, k)
        except ApiError as error:
            return error.body()

    # Every file goes to the micro-batcher at once, so they share ONNX Runtime calls with each other.
    results = await asyncio.gather(*(one(part.data) for part in parts))
    return JSONBytesResponse(
        {
            "results": results,
            "model": model_info(predictor),
            "timing_ms": {"total": ms(time.perf_counter() - started)},
        }
    )
