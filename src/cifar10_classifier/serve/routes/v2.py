"""The Open Inference Protocol (v2), as KServe and Triton speak it, so existing clients and platforms can call us.

`POST /v2/models/{name}/infer` takes one input tensor: FP32 `[N, 3, 32, 32]` already normalized with the model's
mean and std, or UINT8 `[N, 32, 32, 3]` raw pixels that the server normalizes. It answers the softmax
probabilities as FP32 `[N, 10]`, output "probabilities"; a model with an off-distribution detector also answers
"ood_score" FP32 `[N]` (higher = more off-distribution) and "in_distribution" BOOL `[N]` (the score at or below
the model card's threshold). A request's "outputs" list picks among them. Tensors go through the same
micro-batcher as uploads.
"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from cifar10_classifier import __version__
from cifar10_classifier.preprocess import IMAGE_SIZE
from cifar10_classifier.serve.context import ServerContext
from cifar10_classifier.serve.errors import ApiError, JSONBytesResponse
from cifar10_classifier.serve.model import PredictorLike
from cifar10_classifier.serve.schemas import (
    V2InferResponse,
    V2ModelMetadata,
    V2Ready,
    V2ServerMetadata,
    error_responses,
)
from cifar10_classifier.serve.uploads import media_type_of, read_body

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

SERVER_NAME = "cifar10-classifier"
MODEL_ALIAS = "cifar10"  # a stable name that survives model versions; the card's name works too
OUTPUT_NAME = "probabilities"
OOD_SCORE_OUTPUT = "ood_score"
IN_DISTRIBUTION_OUTPUT = "in_distribution"
_SHAPES = {"FP32": (3, IMAGE_SIZE, IMAGE_SIZE), "UINT8": (IMAGE_SIZE, IMAGE_SIZE, 3)}

_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype", "data"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string", "enum": ["FP32", "UINT8"]},
                                    "data": {"type": "array"},
                                },
                            },
                        },
                        "outputs": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                        },
                    },
                }
            }
        },
    }
}


def _model(context: ServerContext, name: str) -> PredictorLike:
    predictor = context.require_ready()
    if name not in (predictor.name, MODEL_ALIAS):
        raise ApiError(404, "unknown_model", f"no model named {name!r}; this server serves {predictor.name!r}")
    return predictor


def output_names(predictor: PredictorLike) -> list[str]:
    """The outputs this model answers: the off-distribution pair only where the model has a detector."""
    has_ood = getattr(predictor, "ood_threshold", None) is not None
    return [OUTPUT_NAME, OOD_SCORE_OUTPUT, IN_DISTRIBUTION_OUTPUT] if has_ood else [OUTPUT_NAME]


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_tensor", message)


def parse_infer_request(
    body: bytes, predictor: PredictorLike, max_images: int
) -> tuple[np.ndarray, str | None, list[str]]:
    """JSON body -> (float32 (N, 3, 32, 32) normalized, request id, output names asked for). Blocking: runs in a
    thread."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {error}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or len(request["inputs"]) != 1:
        raise _invalid('the body must be {"inputs": [one tensor]}')
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _invalid('"id" must be a string')
    available = output_names(predictor)
    requested = []
    for output in request.get("outputs") or []:
        if not isinstance(output, dict) or output.get("name") not in available:
            names = ", ".join(f'"{name}"' for name in available)
            raise _invalid(f"the only output is {names}" if len(available) == 1 else f"the outputs are {names}")
        requested.append(output["name"])
    requested = [name for name in available if name in requested] or available
    tensor = request["inputs"][0]
    if not isinstance(tensor, dict):
        raise _invalid("an input must be an object with name, shape, datatype and data")
    datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
    if datatype not in _SHAPES:
        raise _invalid(f"datatype must be FP32 [N,3,32,32] (normalized) or UINT8 [N,32,32,3] (pixels), not {datatype}")
    if not (isinstance(shape, list) and len(shape) == 4 and all(type(n) is int for n in shape)):
        raise _invalid("shape must be a list of four integers")
    if tuple(shape[1:]) != _SHAPES[datatype] or not 1 <= shape[0] <= max_images:
        expected = "[N,3,32,32]" if datatype == "FP32" else "[N,32,32,3]"
        raise _invalid(f"a {datatype} input has shape {expected} with 1 <= N <= {max_images}; got {shape}")
    if not isinstance(data, list):
        raise _invalid("data must be a list (flat, row-major, or nested)")
    try:
        values = np.array(data, dtype=np.float64)
    except (ValueError, TypeError):
        raise _invalid("data must hold only numbers, nested evenly") from None
    if values.size != int(np.prod(shape)):
        raise _invalid(f"data has {values.size} values; shape {shape} needs {int(np.prod(shape))}")
    if not np.isfinite(values).all():
        raise _invalid("data must be finite numbers")
    if datatype == "UINT8":
        if values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.round(values)):
            raise _invalid("UINT8 data must be whole numbers from 0 to 255")
        return predictor.normalize(values.reshape(shape).astype(np.uint8)), request_id, requested
    return np.ascontiguousarray(values.reshape(shape), dtype=np.float32), request_id, requested


@router.get(
    "", summary="Server metadata", response_class=JSONBytesResponse, responses={200: {"model": V2ServerMetadata}}
)
async def server_metadata() -> Response:
    return JSONBytesResponse({"name": SERVER_NAME, "version": __version__, "extensions": []})


@router.get(
    "/health/live", summary="Server live", response_class=JSONBytesResponse, responses={200: {"model": V2Ready}}
)
async def server_live() -> Response:
    return JSONBytesResponse({"live": True})


@router.get(
    "/health/ready",
    summary="Server ready",
    response_class=JSONBytesResponse,
    responses={200: {"model": V2Ready}, **error_responses(503)},
)
async def server_ready(request: Request) -> Response:
    request.app.state.context.require_ready()
    return JSONBytesResponse({"ready": True})


@router.get(
    "/models/{name}",
    summary="Model metadata",
    response_class=JSONBytesResponse,
    responses={200: {"model": V2ModelMetadata}, **error_responses(404, 503)},
)
async def model_metadata(request: Request, name: str) -> Response:
    predictor = _model(request.app.state.context, name)
    return JSONBytesResponse(
        {
            "name": predictor.name,
            "versions": [predictor.version],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, IMAGE_SIZE, IMAGE_SIZE]}],
            "outputs": [
                {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, len(predictor.classes)]},
                *(
                    [
                        {"name": OOD_SCORE_OUTPUT, "datatype": "FP32", "shape": [-1]},
                        {"name": IN_DISTRIBUTION_OUTPUT, "datatype": "BOOL", "shape": [-1]},
                    ]
                    if len(output_names(predictor)) > 1
                    else []
                ),
            ],
            "parameters": {
                "classes": list(predictor.classes),
                "also_accepts": {"datatype": "UINT8", "shape": [-1, IMAGE_SIZE, IMAGE_SIZE, 3]},
            },
        }
    )


@router.get(
    "/models/{name}/ready",
    summary="Model ready",
    response_class=JSONBytesResponse,
    responses={200: {"model": V2Ready}, **error_responses(404, 503)},
)
async def model_ready(request: Request, name: str) -> Response:
    _model(request.app.state.context, name)
    return JSONBytesResponse({"ready": True})


@router.post(
    "/models/{name}/infer",
    summary="Inference",
    response_class=JSONBytesResponse,
    responses={200: {"model": V2InferResponse}, **error_responses(400, 404, 413, 415, 422, 429, 503, 504)},
    openapi_extra=_INFER_BODY,
)
async def infer(request: Request, name: str) -> Response:
    context: ServerContext = request.app.state.context
    predictor = _model(context, name)
    media_type, _ = media_type_of(request)
    if media_type not in ("application/json", ""):
        raise ApiError(
            415, "unsupported_media_type", f"send the inference request as application/json (got {media_type})"
        )
    body = await read_body(request, context.settings.max_upload_bytes)
    # Parsing a few megabytes of JSON numbers takes milliseconds: off the event loop.
    tensor, request_id, requested = await asyncio.to_thread(
        parse_infer_request, body, predictor, context.settings.max_tensor_batch
    )
    result = await context.infer(tensor)
    tensors = {
        OUTPUT_NAME: ("FP32", np.ascontiguousarray(result.probabilities, np.float32)),
    }
    threshold = getattr(predictor, "ood_threshold", None)
    if result.ood_scores is not None and threshold is not None:
        scores = np.ascontiguousarray(result.ood_scores, np.float32)
        tensors[OOD_SCORE_OUTPUT] = ("FP32", scores)
        tensors[IN_DISTRIBUTION_OUTPUT] = ("BOOL", scores <= threshold)
    answer = {
        "model_name": predictor.name,
        "model_version": predictor.version,
        "outputs": [
            {
                "name": name,
                "shape": list(tensors[name][1].shape),
                "datatype": tensors[name][0],
                "data": tensors[name][1].ravel(),
            }
            for name in requested
            if name in tensors
        ],
    }
    if request_id is not None:
        answer["id"] = request_id
    return JSONBytesResponse(answer)
