import json

import numpy as np
from support import color_tile, png_bytes

from cifar10_classifier.cli import main


def _write_images(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(color_tile(1, size=64)))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(png_bytes(np.full((48, 80, 3), 120, np.uint8), fmt="JPEG"))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    return good, photo, bad


def test_predict_table_for_good_images(tiny_onnx_model, tmp_path, capsys):
    good, photo, _ = _write_images(tmp_path)
    assert main(["predict", str(good), str(photo), "--model", str(tiny_onnx_model), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(good)) and "top-2" in lines[0]


def test_predict_mixed_inputs_json_reports_each_and_fails_overall(tiny_onnx_model, tmp_path, capsys):
    good, _, bad = _write_images(tmp_path)
    missing = tmp_path / "missing.png"
    code = main(["predict", str(bad), str(good), str(missing), "--model", str(tiny_onnx_model), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    rows = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert [row["file"] for row in rows] == [str(bad), str(good), str(missing)]
    assert "error" in rows[0] and rows[1]["class"] and len(rows[1]["top_k"]) == 3 and "error" in rows[2]
    assert f"error: {bad}" in captured.err and "2 of 3 images failed" in captured.err


def test_predict_with_a_missing_model_says_what_to_do(tmp_path, capsys):
    good, _, _ = _write_images(tmp_path)
    assert main(["predict", str(good), "--model", str(tmp_path / "nope.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
