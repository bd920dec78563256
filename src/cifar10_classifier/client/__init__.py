"""A Python client for the server's HTTP API: two lines to a prediction. It needs httpx only, no torch and no
numpy, so it runs wherever the server can be reached.

    from cifar10_classifier.client import Client
    print(Client("http://127.0.0.1:8000").predict("photo.jpg", top_k=3).class_name)

Every failure is a `ClientError` carrying the server's error code and message (or the client's own code when no
answer came); 429 and 503 are retried, honouring Retry-After, within a `RetryPolicy`'s bounds.
"""

from cifar10_classifier.client.errors import ClientError
from cifar10_classifier.client.http_client import Client, ImageInput
from cifar10_classifier.client.results import ClassProbability, FailedPrediction, ModelInfo, Prediction, Timing
from cifar10_classifier.client.retries import RetryPolicy

__all__ = [
    "ClassProbability",
    "Client",
    "ClientError",
    "FailedPrediction",
    "ImageInput",
    "ModelInfo",
    "Prediction",
    "RetryPolicy",
    "Timing",
]
