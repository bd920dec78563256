"""The serving peer: a bare FastAPI + ONNX Runtime endpoint, as a tutorial writes it. No batching, limits or
metrics; one session.run per request. bench/serve_load.py runs it beside `cifar10 serve` on the same model:
    PEER_MODEL=model.onnx uvicorn peer_serve:app --app-dir bench --workers 2
"""

import io
import json
import os
from typing import Annotated

import numpy as np
import onnxruntime
from fastapi import FastAPI, File, UploadFile
from PIL import Image

session = onnxruntime.InferenceSession(os.environ["PEER_MODEL"], providers=["CPUExecutionProvider"])
card = json.loads(session.get_modelmeta().custom_metadata_map["cifar10_card"])
mean, std = np.array(card["input"]["mean"], np.float32), np.array(card["input"]["std"], np.float32)
app = FastAPI()


@app.post("/predict")
async def predict(file: Annotated[UploadFile, File()]):
    image = Image.open(io.BytesIO(await file.read())).convert("RGB").resize((32, 32))
    pixels = ((np.asarray(image, np.float32) - mean) / std).transpose(2, 0, 1)[None]  # card stats: 0..255
    logits = session.run(None, {session.get_inputs()[0].name: pixels})[0][0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    return {"class": card["classes"][int(probabilities.argmax())], "probability": float(probabilities.max())}
