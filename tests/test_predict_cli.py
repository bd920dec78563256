import json

import numpy as np
import pytest
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


def test_predict_explain_writes_the_overlay_png(tiny_onnx_model, tmp_path, capsys):
    from PIL import Image

    good, _, _ = _write_images(tmp_path)
    target = tmp_path / "out" / "why.png"
    assert main(["predict", str(good), "--model", str(tiny_onnx_model), "--explain", str(target)]) == 0
    with Image.open(target) as overlay:
        assert overlay.format == "PNG" and overlay.size == (256, 256)
    assert f"heat map: {target}" in capsys.readouterr().out
    assert [path.name for path in target.parent.iterdir()] == ["why.png"]  # no temporary file left beside it


def test_predict_explain_numbers_the_overlays_of_several_images(tiny_onnx_model, tmp_path, capsys):
    good, photo, bad = _write_images(tmp_path)
    target = tmp_path / "why.png"
    args = ["predict", str(good), str(bad), str(photo), "--model", str(tiny_onnx_model), "--json"]
    assert main([*args, "--explain", str(target)]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [row.get("explanation") for row in rows] == [str(tmp_path / "why-1.png"), None, str(tmp_path / "why-3.png")]
    assert sorted(path.name for path in tmp_path.glob("why*")) == ["why-1.png", "why-3.png"]


def test_an_off_distribution_prediction_is_marked_and_kept(tiny_onnx_model, tmp_path, capsys, monkeypatch):
    from cifar10_classifier.inference import Prediction

    good, _, _ = _write_images(tmp_path)
    plain = Prediction.to_dict
    monkeypatch.setattr(Prediction, "to_dict", lambda self: {**plain(self), "in_distribution": False})
    assert main(["predict", str(good), "--model", str(tiny_onnx_model)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("[none of the 10 classes?]")
    assert main(["predict", str(good), "--model", str(tiny_onnx_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["in_distribution"] is False
    monkeypatch.setattr(Prediction, "to_dict", lambda self: {**plain(self), "in_distribution": True})
    assert main(["predict", str(good), "--model", str(tiny_onnx_model)]) == 0
    assert "none of the 10 classes" not in capsys.readouterr().out


def test_without_the_field_nothing_is_marked(tiny_onnx_model, tmp_path, capsys):
    good, _, _ = _write_images(tmp_path)
    assert main(["predict", str(good), "--model", str(tiny_onnx_model)]) == 0
    assert "none of the 10 classes" not in capsys.readouterr().out


def test_predict_url_prints_what_the_local_model_prints(bundled_server, tmp_path, capsys):
    """The server serves the bundled model, the default of a local `predict`: the same lines either way."""
    good, photo, bad = _write_images(tmp_path)
    args = ["predict", str(good), str(bad), str(photo), str(tmp_path / "missing.png"), "--top-k", "2"]
    for extra in ([], ["--json"]):
        assert main([*args, *extra]) == 1
        local = capsys.readouterr()
        assert main([*args, *extra, "--url", bundled_server]) == 1
        remote = capsys.readouterr()
        assert remote.out == local.out and remote.err == local.err
    assert "2 of 4 images failed" in remote.err


def test_predict_url_marks_an_off_distribution_image(bundled_server, tmp_path, capsys):
    noise = tmp_path / "noise.png"
    noise.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    assert main(["predict", str(noise), "--url", bundled_server]) == 0
    assert capsys.readouterr().out.rstrip().endswith("[none of the 10 classes?]")


def test_predict_url_without_a_server_is_one_line_and_exit_2(tmp_path, capsys):
    from support import free_port

    good, _, _ = _write_images(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["predict", str(good), "--url", url]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith(f"error: cannot connect to {url}")
    assert len(captured.err.strip().splitlines()) == 1


def test_predict_url_refuses_explain_and_model(tiny_onnx_model, tmp_path, capsys):
    good, _, _ = _write_images(tmp_path)
    assert main(["predict", str(good), "--url", "http://127.0.0.1:9", "--explain", str(tmp_path / "why.png")]) == 2
    assert "--explain needs a local model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(good), "--url", "http://127.0.0.1:9", "--model", str(tiny_onnx_model)])
    assert "not allowed with argument" in capsys.readouterr().err
