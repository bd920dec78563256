"""The HTTP service: FastAPI app, settings, micro-batching, errors, metrics and the page. No torch here."""
