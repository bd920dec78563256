import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from cifar10_classifier.export.graph import ExportConfig, ExportError, inference_graph
from cifar10_classifier.inference import CARD_METADATA_KEY, Predictor
from cifar10_classifier.jobs import export_run
from cifar10_classifier.models import create_model
from cifar10_classifier.models.weights import load_weights
from cifar10_classifier.preprocess import normalize


@pytest.fixture
def exported(trained_run, tmp_path, monkeypatch):
    import cifar10_classifier.data as data_module

    run, dataset = trained_run
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: dataset)
    config = ExportConfig(out_dir=tmp_path / "export", calibration_images=100, allow_accuracy_drop=True)
    summary = export_run(run, None, config, log=lambda *_: None)
    return run, dataset, summary


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("tta_level", [0, 1, 2])
def test_inference_graph_matches_the_trained_model(activation, tta_level):
    from cifar10_classifier.evaluation.metrics import predict_logits

    torch.manual_seed(0)
    model = create_model("fast-net", widths=(8, 16, 16), activation=activation)
    model.init_whitening(torch.randn(32, 3, 32, 32))
    model.train()
    for _ in range(3):  # give BN non-trivial running statistics
        model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    model.eval()
    images = torch.randn(5, 3, 32, 32)
    expected = predict_logits(model, images, tta_level)
    with torch.no_grad():
        actual = inference_graph(model, tta_level)(images).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_export_round_trip_matches_pytorch_and_embeds_the_card(exported):
    run, dataset, summary = exported
    model, card = load_weights(run)
    fp32 = Predictor(summary["fp32"])
    images = np.asarray(dataset.test.images_uint8[:20])
    with torch.no_grad():
        expected = inference_graph(model, card["tta_level"])(torch.from_numpy(normalize(images))).numpy()
    # The exported logits are the network's divided by the temperature fitted on the fp32 file's own logits.
    expected = expected / fp32.card["calibration"]["temperature"]
    np.testing.assert_allclose(fp32.logits(normalize(images)), expected, rtol=1e-4, atol=1e-4)
    embedded = json.loads({p.key: p.value for p in onnx.load(summary["fp32"]).metadata_props}[CARD_METADATA_KEY])
    assert embedded["classes"][0] == "airplane" and embedded["input"]["mean"] and embedded["tta_level"] == 1
    int8 = Predictor(summary["int8"])
    assert int8.card["format"] == "onnx-int8" and "onnx_int8" in int8.card["accuracy"]
    card_beside = json.loads(Path(summary["int8"]).with_suffix(".json").read_text())
    assert card_beside["quantization"]["weights"] == "int8 per-channel"


def test_int8_past_the_accuracy_limit_is_refused_and_nothing_written(trained_run, tmp_path, monkeypatch):
    import cifar10_classifier.data as data_module
    import cifar10_classifier.export.quantize as export_module

    run, dataset = trained_run
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: dataset)
    real_accuracy = export_module.onnx_accuracy
    monkeypatch.setattr(
        export_module,
        "onnx_accuracy",
        lambda path, *a: real_accuracy(path, *a) - (0.2 if "int8" in Path(path).name else 0.0),
    )
    config = ExportConfig(out_dir=tmp_path / "export", calibration_images=100)
    with pytest.raises(ExportError, match="--allow-accuracy-drop"):
        export_run(run, None, config, log=lambda *_: None)
    assert not (tmp_path / "export" / "model-int8.onnx").exists()
    assert not [p for p in (tmp_path / "export").iterdir() if p.name.startswith(".")]


def test_predictor_gives_the_pytorch_class_on_the_same_bytes(exported):
    import io

    from PIL import Image

    from cifar10_classifier.preprocess import decode_image

    run, dataset, summary = exported
    model, card = load_weights(run)
    predictor = Predictor(summary["fp32"])
    graph = inference_graph(model, card["tta_level"])
    for image in np.asarray(dataset.test.images_uint8[::7]):
        buffer = io.BytesIO()
        Image.fromarray(image).resize((96, 96)).save(buffer, format="PNG")
        data = buffer.getvalue()
        with torch.no_grad():
            torch_class = int(graph(torch.from_numpy(normalize(decode_image(data)))).argmax(1))
        assert predictor.predict_bytes(data).class_index == torch_class


def test_int8_graph_keeps_block_activations_in_uint8(exported):
    # Every ReLU inside the conv blocks is folded into its conv's uint8 output; the one ReLU left in fp32 would
    # follow the fp32 whitening conv. A ReLU between a DequantizeLinear and a QuantizeLinear costs a round trip.
    graph = onnx.load(exported[2]["int8"]).graph
    producers = {output: node for node in graph.node for output in node.output}
    relu_inputs = [producers[node.input[0]].op_type for node in graph.node if node.op_type == "Relu"]
    assert "DequantizeLinear" not in relu_inputs, relu_inputs
    assert sum(node.op_type == "Conv" for node in graph.node) > 1


def test_both_files_bake_the_temperature_and_add_the_ood_output(exported):
    import onnxruntime as ort

    from cifar10_classifier.calibration import softmax

    run, dataset, summary = exported
    model, card = load_weights(run)
    images = normalize(np.asarray(dataset.test.images_uint8[:30]))
    with torch.no_grad():
        torch_logits, _, _ = inference_graph(model, card["tta_level"], with_features=True)(torch.from_numpy(images))
    for path in (summary["fp32"], summary["int8"]):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert [output.name for output in session.get_outputs()] == ["logits", "ood_score"]
        predictor = Predictor(path)
        calibration, ood = predictor.card["calibration"], predictor.card["ood"]
        assert calibration["bins"] == 15 and "training images" in calibration["fit_on"]
        assert calibration["held_out_split"] == {"val_fraction": 0.0, "seed": 0}
        assert 0 <= calibration["ece_after"] <= 1 and 0 <= calibration["ece_before"] <= 1
        assert ood["detector"] == "layer_statistics" and ood["keep_rate_target"] == 0.95 and predictor.has_ood
        assert ood["threshold"] > 0 and 0 <= ood["test_kept"] <= 1 and "training images" in ood["gaussian_fit_on"]
        if path == summary["fp32"]:
            # Probabilities of the exported model are softmax(logits / T) of the torch model.
            expected = softmax(torch_logits.numpy() / calibration["temperature"])
            np.testing.assert_allclose(predictor.probabilities(images), expected, rtol=1e-3, atol=1e-4)
            # The in-graph score: test_layer_statistics_detector_runs_in_the_graph_as_numpy_computes_it.
            _, scores = predictor.logits_and_ood(images)
            assert scores.shape == (len(images),) and (scores > 0).all()


def test_a_network_without_features_gets_the_energy_score(tmp_path):
    from support import build_tiny_onnx, tiny_dataset

    from cifar10_classifier.calibration import energy_score
    from cifar10_classifier.export.served_outputs import FitImages, bake_outputs, fit_served_outputs

    dataset = tiny_dataset(per_class_train=5, per_class_test=3)
    path = build_tiny_onnx(tmp_path / "plain.onnx")
    images = FitImages(
        held_out=normalize(dataset.train.images_uint8),
        held_out_labels=dataset.train.labels,
        held_out_description="50 training images",
        held_out_split={"val_fraction": 0.0, "seed": 0},
        test=normalize(dataset.test.images_uint8),
        test_labels=dataset.test.labels,
    )
    fitted = fit_served_outputs(path, images)
    assert fitted["ood"]["detector"] == "energy"
    raw = Predictor(path).logits(images.test)
    bake_outputs(path, {**fitted})
    predictor = Predictor(path)
    predictor.ood_threshold = fitted["ood"]["threshold"]  # the card is written by export_run, not here
    logits, scores = predictor.logits_and_ood(images.test)
    np.testing.assert_allclose(logits, raw / fitted["temperature"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, energy_score(logits), rtol=1e-4, atol=1e-4)


def test_predictions_carry_the_ood_fields_when_the_model_has_a_detector(exported, tiny_onnx_model):
    from support import png_bytes

    _, dataset, summary = exported
    data = png_bytes(np.asarray(dataset.test.images_uint8[0]))
    body = Predictor(summary["int8"]).predict_bytes(data).to_dict()
    assert isinstance(body["in_distribution"], bool) and isinstance(body["ood_score"], float)
    plain = Predictor(tiny_onnx_model)
    assert not plain.has_ood
    body = plain.predict_bytes(data).to_dict()
    assert body["in_distribution"] is None and body["ood_score"] is None


def test_bundled_model_card_text_states_calibration_and_the_ood_threshold(exported):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "build_bundled_model.py"
    spec = importlib.util.spec_from_file_location("build_bundled_model", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    card = json.loads(Path(exported[2]["int8"]).with_suffix(".json").read_text())
    text = module.model_card_markdown(card)
    assert f"T = {card['calibration']['temperature']:.3f}" in text and "Expected calibration error" in text
    assert f"<= {card['ood']['threshold']:.6g}" in text and "in_distribution" in text
    assert module.HOLD_OUT_FRACTION * 50_000 == 2000


def test_layer_statistics_detector_runs_in_the_graph_as_numpy_computes_it(trained_run, tmp_path):
    """The detector served by fast-net exports: the Mahalanobis distance of the first blocks' channel statistics,
    of the un-augmented image even when TTA is in the graph, baked into both outputs' graph."""
    import onnxruntime as ort

    from cifar10_classifier import calibration as cal
    from cifar10_classifier.export.graph import export_onnx
    from cifar10_classifier.export.served_outputs import FitImages, bake_outputs, fit_served_outputs

    run, dataset = trained_run
    model, card = load_weights(run)
    train, test = normalize(dataset.train.images_uint8), normalize(dataset.test.images_uint8)
    graph = inference_graph(model, 1, with_features=True)
    assert graph.output_names == ["logits", "features", "statistics"]
    with torch.no_grad():
        _, _, statistics = graph(torch.from_numpy(test))
        _, _, plain_statistics = inference_graph(model, 0, with_features=True)(torch.from_numpy(test))
    np.testing.assert_allclose(statistics.numpy(), plain_statistics.numpy(), rtol=1e-5, atol=1e-6)
    widths = card["model_config"]["widths"]
    assert statistics.shape == (len(test), widths[0] + widths[1])

    path = tmp_path / "stage.onnx"
    export_onnx(graph, path, card)
    images = FitImages(
        held_out=train[:100],
        held_out_labels=dataset.train.labels[:100],
        held_out_description="100 training images",
        held_out_split={"val_fraction": 0.0, "seed": 0},
        test=test,
        test_labels=dataset.test.labels,
        statistics_fit=train[100:],
        statistics_fit_description="100 other training images",
    )
    fitted = fit_served_outputs(path, images)
    ood = fitted["ood"]
    assert ood["detector"] == "layer_statistics" and ood["gaussian_fit_on"] == "100 other training images"
    assert ood["dimensions"] == statistics.shape[1] and ood["threshold"] > 0
    bake_outputs(path, fitted)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [output.name for output in session.get_outputs()] == ["logits", "ood_score"]
    scores = session.run(["ood_score"], {"input": test})[0]
    gaussian = cal.fit_mahalanobis(
        graph_statistics := inference_graph(model, 0, with_features=True)(torch.from_numpy(train[100:]))[2]
        .detach()
        .numpy(),
        np.zeros(len(graph_statistics), np.int64),
    )
    expected = np.sqrt(cal.mahalanobis_score(statistics.numpy(), gaussian["whiten"], gaussian["means"]))
    np.testing.assert_allclose(scores, expected, rtol=1e-3, atol=1e-3)
    # Noise is far from the statistics of any training image.
    noise = np.random.default_rng(0).normal(0, 1, size=(20, 3, 32, 32)).astype(np.float32) * 3
    assert (session.run(["ood_score"], {"input": noise})[0] > ood["threshold"]).all()


def test_a_network_with_features_but_no_statistics_gets_the_feature_norm(trained_run, tmp_path):
    from cifar10_classifier.calibration import feature_norm_score
    from cifar10_classifier.export.graph import export_onnx
    from cifar10_classifier.export.served_outputs import FitImages, bake_outputs, fit_served_outputs

    run, dataset = trained_run
    model, card = load_weights(run)
    train, test = normalize(dataset.train.images_uint8), normalize(dataset.test.images_uint8)
    graph = inference_graph(model, 0, with_features=True)
    graph.with_statistics, graph.output_names = False, ["logits", "features"]  # as a network without them
    path = tmp_path / "stage.onnx"
    export_onnx(graph, path, card)
    split = {"val_fraction": 0.0, "seed": 0}
    images = FitImages(train, dataset.train.labels, "training images", split, test, dataset.test.labels, train)
    fitted = fit_served_outputs(path, images)
    assert fitted["ood"]["detector"] == "feature_norm" and fitted["ood"]["threshold"] < 0
    bake_outputs(path, fitted)
    with torch.no_grad():
        _, features = graph(torch.from_numpy(test))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores = session.run(["ood_score"], {"input": test})[0]
    np.testing.assert_allclose(scores, feature_norm_score(features.numpy()), rtol=1e-4)
