"""The server's settings: one object, read from `CIFAR10_*` environment variables and the `serve` command line.

The defaults were chosen by measurement on the 2-core machine the project targets (see bench/serve_load.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from cifar10_classifier.machine import usable_cores
from cifar10_classifier.preprocess import DEFAULT_MAX_PIXELS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CIFAR10_", extra="ignore", protected_namespaces=())

    # Where: the bundled int8 model unless a path is given.
    model: Path | None = Field(None, description="ONNX model file; default: the bundled int8 model")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # One process per core (at most 4: each holds its own copy of the model); each worker's ONNX Runtime gets
    # cores // workers threads, so the workers never fight over the cores. Two on the 2-core target: a single
    # process is held back by the GIL (measured ~25% fewer requests/s).
    workers: int | None = Field(None, ge=1, description="server processes; default one per core, at most 4")
    threads: int | None = Field(None, ge=1, description="ONNX Runtime threads per worker; default cores // workers")
    # Spinning inference threads would steal the cores the event loop and the decoder need.
    spin: bool = False

    # Micro-batching: a batch leaves when it is full, when max_wait_ms has passed since its first request, or as
    # soon as the running batch finishes. Measured with wrk at concurrency 32 on 2 cores: 0 ms costs ~20% more
    # CPU per request than 2 ms (batches of one while the model is idle); 5 ms gained nothing more. A lone
    # request pays at most these 2 ms.
    max_batch_size: int = Field(32, ge=1, le=1024)
    max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0)

    # Admission: past this many requests in flight (per worker) the server answers 429 at once.
    max_in_flight: int = Field(256, ge=1)
    retry_after_s: int = Field(1, ge=0)
    request_timeout_s: float = Field(15.0, gt=0.0)
    shutdown_timeout_s: float = Field(10.0, ge=0.0)

    # Input limits: the whole request body, the decoded canvas, the files in one batch, the tensors in one v2 call.
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    max_files_per_request: int = Field(64, ge=1)
    max_tensor_batch: int = Field(256, ge=1)
    # Lingering close (serve/linger.py): after answering before the body was read (a 413, say), read and drop up
    # to this much more of it, for at most this long, so a client that sends everything first still reads the
    # answer. Measured on loopback, 2 cores: urllib's 50 MB upload gets its 413 in ~40 ms. 0 bytes: no linger.
    linger_max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    linger_timeout_s: float = Field(5.0, ge=0.0)
    # At most this many connections linger at once (per worker): under a flood of rejected uploads the rest are
    # closed at once, so draining never takes more than this many sockets' worth of reading.
    linger_max_connections: int = Field(32, ge=0)
    default_top_k: int = Field(3, ge=1, le=10)

    # Preload: a worker loads and warms the model before it accepts connections, so with several workers on one
    # socket no request lands on a cold one. Off: accept at once, load in the background, /readyz 503 meanwhile.
    preload: bool = True
    # Warm-up runs before /readyz turns 200, so the first real request does not pay ONNX Runtime's allocations.
    warmup_runs: int = Field(3, ge=0)
    log_level: str = "info"

    def resolved_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        cores = usable_cores()
        return max(1, min(cores, 4))
