"""Operations: liveness, readiness and Prometheus metrics. None of them is subject to the admission limit."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from cifar10_classifier.serve.context import ServerContext
from cifar10_classifier.serve.errors import JSONBytesResponse
from cifar10_classifier.serve.schemas import StatusResponse, error_responses

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Alive",
    response_class=JSONBytesResponse,
    responses={200: {"model": StatusResponse}},
)
async def healthz() -> Response:
    return JSONBytesResponse({"status": "ok"})


@router.get(
    "/readyz",
    summary="Model loaded and warmed up",
    description="200 once the model is loaded and warmed up; 503 before, or when there is no model (the message "
    "says how to get one).",
    response_class=JSONBytesResponse,
    responses={200: {"model": StatusResponse}, **error_responses(503)},
)
async def readyz(request: Request) -> Response:
    context: ServerContext = request.app.state.context
    context.require_ready()  # raises the 503 that says why
    return JSONBytesResponse(context.model.describe())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    context: ServerContext = request.app.state.context
    return Response(context.metrics.render(), media_type=context.metrics.content_type)
