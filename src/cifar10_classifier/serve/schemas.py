"""Response shapes, for the OpenAPI document only: the hot path builds dicts and serialises them with orjson."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable, e.g. not_image, corrupt_image, upload_too_large")
    message: str = Field(description="what went wrong and what to do, for a person")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ClassProbability(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class")
    probability: float


class ModelInfo(BaseModel):
    name: str
    version: str


class ItemTiming(BaseModel):
    decode: float = Field(description="this image's decode and resize, ms")
    inference: float = Field(description="the ONNX Runtime call this image shared with its batch, ms")


class Timing(ItemTiming):
    total: float = Field(description="from the request reaching the route to the answer, ms")


class ClassPrediction(BaseModel):
    """The answer about one image, as /predict and /explain both give it."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    class_name: str = Field(alias="class")
    class_index: int
    probability: float
    top_k: list[ClassProbability]
    in_distribution: bool | None = Field(
        None,
        description="false: the image looks like none of the 10 classes (its ood_score is above the threshold in "
        "the model card); null when the model has no off-distribution detector",
    )
    ood_score: float | None = Field(None, description="higher = more off-distribution; null without a detector")


class PredictionResponse(ClassPrediction):
    model: ModelInfo
    timing_ms: Timing


class BatchItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str | None = Field(None, alias="class")
    class_index: int | None = None
    probability: float | None = None
    top_k: list[ClassProbability] | None = None
    in_distribution: bool | None = Field(
        None,
        description="false: the image looks like none of the 10 classes (its ood_score is above the threshold in "
        "the model card); null when the model has no off-distribution detector",
    )
    ood_score: float | None = Field(None, description="higher = more off-distribution; null without a detector")
    timing_ms: ItemTiming | None = None
    error: ErrorDetail | None = None


class BatchResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    results: list[BatchItem] = Field(description="one per file, in upload order: a prediction or an error")
    model: ModelInfo
    timing_ms: dict[str, float]


class StatusResponse(BaseModel):
    status: str
    message: str | None = None
    model: ModelInfo | None = None


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2Ready(BaseModel):
    live: bool | None = None
    ready: bool | None = None


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2OutputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class V2InferResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2OutputTensor]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for a route's documented errors."""
    return {status: {"model": ErrorResponse} for status in statuses}


class ExplanationTiming(BaseModel):
    decode: float = Field(description="the image's decode and resize, ms")
    inference: float = Field(description="the one ONNX Runtime call over the original and every masked copy, ms")
    total: float = Field(description="from the request reaching the route to the answer, ms")


class ExplanationResponse(ClassPrediction):
    heatmap: list[list[Annotated[float, Field(ge=0.0, le=1.0)]]] = Field(
        description="grid x grid, rows first (top row first), 0..1: how much hiding that cell lowers the predicted "
        "class's probability, relative to the cell that lowers it most; all 0 when no cell lowers it"
    )
    grid: int = Field(description="cells per side: each cell covers 32/grid x 32/grid pixels of the 32x32 input")
    model: ModelInfo
    timing_ms: ExplanationTiming
