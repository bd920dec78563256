"""Training under torchrun on CPU with gloo: 2 processes on tiny synthetic data, a few steps each.

Every job here is a real torchrun launch of tests/distributed_worker.py (the `cifar10 train` CLI with test hooks)
or of `cifar10 train --nproc 2` itself. Each rank runs in its own folder, so "only rank 0 wrote files" is a
look at rank 1's folder, and resuming proves that only rank 0's machine needs the run folder.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import free_port, tiny_dataset, write_image_folder

from cifar10_classifier.training.loop import train
from cifar10_classifier.training.recipes import resolve_recipe

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("distributed_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
STANDALONE = ["--standalone", "--nproc-per-node=2"]  # 2 processes on this machine
HANG_GUARD_SECONDS = 180  # a job still running after this has hung: the test fails instead of waiting forever

# fast-net with synchronised BN, shrunk to seconds. GELU rather than ReLU: on this tiny data ReLU's kinks turn
# float rounding noise (any change of summation order) into 1e-3 weight differences within 10 steps; with GELU
# the noise stays below 1e-6, so the 1-process comparison can be tight. fp32 pinned: on a CPU with native bf16,
# `auto` would pick bf16 autocast, whose rounding (~7e-4 here) the tolerances below are not meant for.
FAST = {
    "model_config": {"widths": [8, 16, 16], "activation": "gelu"},
    "precision": "fp32",
    "batch_size": 40,
    "epochs": 2,
    "whiten_images": 100,
    "sync_batchnorm": True,
}
STEPS_PER_EPOCH = 200 // 40  # tiny_dataset(): 200 training images, no validation split in `fast`


def worker_command(torchrun_flags: list[str], config: Path, recipe: str = "fast") -> list[str]:
    train_args = ["--recipe", recipe, "--config", str(config), "--out", "run", "--quiet"]
    return [*TORCHRUN, *torchrun_flags, str(WORKER), "train", *train_args]


def launch(command: list[str], root: Path, **worker_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORKER_ROOT": str(root), "WORKER_EVALUATE": "0", **worker_env}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)


def rank_weights(folder: Path) -> list[dict]:
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(2)]


def assert_same_weights(actual: dict, expected: dict, atol: float = 0.0) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if atol:
            assert torch.allclose(actual[key].float(), value.float(), rtol=0, atol=atol), key
        else:
            assert torch.equal(actual[key], value), key


@pytest.fixture(scope="module")
def fast_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "fast.json"
    path.write_text(json.dumps(FAST))
    return path


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, fast_config):
    """One uninterrupted run of 2 "machines" on loopback: two torchrun invocations of one process each, meeting
    through c10d rendezvous as two hosts would -> (its root folder, each rank's final weights)."""
    root = tmp_path_factory.mktemp("two-nodes")
    weights = root / "weights"
    weights.mkdir()
    node_flags = [
        "--nnodes=2",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        "--rdzv-id=loopback-test",
    ]
    command = worker_command(node_flags, fast_config)
    # One thread each, as torchrun sets for several processes on one machine: the same arithmetic as the other runs.
    env = {**os.environ, "WORKER_ROOT": str(root), "WORKER_WEIGHTS_DIR": str(weights), "WORKER_EVALUATE": "0"}
    env["OMP_NUM_THREADS"] = "1"
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=HANG_GUARD_SECONDS)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(outputs)
    return root, rank_weights(weights)


def test_two_nodes_end_with_identical_weights(two_rank_run):
    _, (rank0, rank1) = two_rank_run
    assert_same_weights(rank1, rank0)  # parameters and the synchronised BN statistics, bit for bit


def test_two_ranks_match_one_process_with_the_same_global_batch(two_rank_run, tmp_path):
    root, (rank0, _) = two_rank_run
    recipe = resolve_recipe("fast", FAST)
    assert json.loads((root / "rank0" / "run" / "config.json").read_text())["recipe"] == recipe.to_dict()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun worker runs (OMP_NUM_THREADS=1)
    try:
        single, _, _ = train(recipe, tiny_dataset(), tmp_path, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    assert_same_weights(rank0, {key: value.cpu() for key, value in single.state_dict().items()}, atol=1e-4)


def test_only_rank_0_writes_files(two_rank_run):
    root, _ = two_rank_run
    written = {path.name for path in (root / "rank0" / "run").iterdir()}
    assert {"checkpoint.pt", "config.json", "history.json", "model.safetensors", "model.json"} <= written
    assert not list((root / "rank1").iterdir())


def test_killed_rank_fails_the_job_and_the_run_resumes_to_the_same_weights(two_rank_run, fast_config, tmp_path):
    """The same run on one machine with 2 processes: a rank dies; resuming ends where the uninterrupted run did."""
    weights = tmp_path / "weights"
    weights.mkdir()
    command = worker_command(STANDALONE, fast_config)
    # Rank 1 dies in the middle of epoch 2: rank 0 has saved epoch 1 (it took part in epoch 2's first steps).
    crashed = launch(command, tmp_path, WORKER_EXIT_AT_STEP=f"1:{STEPS_PER_EPOCH + 2}")
    assert crashed.returncode != 0
    checkpoint = torch.load(tmp_path / "rank0" / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["state"]["epoch"] == 1

    # Resumed as a user would: no recipe flags, so rank 0 reads them from the run folder and tells rank 1.
    resume_command = [*TORCHRUN, *STANDALONE, str(WORKER), "train", "--out", "run", "--quiet", "--resume"]
    contradicted = launch([*resume_command, "--seed", "9"], tmp_path)
    assert contradicted.returncode != 0
    assert contradicted.stderr.count("seed is 0 in the run, 9 given") == 1, contradicted.stderr  # rank 0 says it
    resumed = launch(resume_command, tmp_path, WORKER_WEIGHTS_DIR=str(weights))
    assert resumed.returncode == 0, resumed.stderr
    history = json.loads((tmp_path / "rank0" / "run" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    _, (expected, _) = two_rank_run
    for actual in rank_weights(weights):
        assert_same_weights(actual, expected, atol=1e-6)
    assert not list((tmp_path / "rank1").iterdir())  # rank 1 resumed from what rank 0 read and sent


def test_hung_rank_makes_the_others_stop_after_the_timeout_with_one_line(fast_config, tmp_path):
    command = worker_command(STANDALONE, fast_config)
    job = launch(command, tmp_path, CIFAR10_DIST_TIMEOUT="3", WORKER_HANG_AT_STEP=f"1:{STEPS_PER_EPOCH + 1}")
    assert job.returncode != 0
    lines = [line for line in job.stderr.splitlines() if line.startswith("error: rank 0 of 2 stopped")]
    assert len(lines) == 1, job.stderr
    assert "stopped answering for 3 s (CIFAR10_DIST_TIMEOUT)" in lines[0]


def test_early_stopping_stops_every_rank_together(tmp_path):
    """The classic recipe: validation every epoch, unsynchronised batch norm. Rank 0's scripted validation losses
    stop the run at epoch 4; had rank 1 judged its own (falling) losses, it would train on alone and hang."""
    config = tmp_path / "classic.json"
    classic = {"model_config": {"widths": [8, 16], "block_dropout": [0.1, 0.1], "dense_width": 16}, "batch_size": 32}
    config.write_text(json.dumps({**classic, "epochs": 6, "early_stopping_patience": 2}))
    weights = tmp_path / "weights"
    weights.mkdir()
    job = launch(
        worker_command(STANDALONE, config, "classic"),
        tmp_path,
        WORKER_WEIGHTS_DIR=str(weights),
        WORKER_VAL_LOSSES="1.0,0.5,0.7,0.8,0.9,1.0",
    )
    assert job.returncode == 0, job.stderr
    rank0, rank1 = rank_weights(weights)
    assert_same_weights(rank1, rank0)  # BN statistics too: every epoch averages them over the ranks
    history = json.loads((tmp_path / "rank0" / "run" / "history.json").read_text())
    assert [row["val_loss"] for row in history] == [1.0, 0.5, 0.7, 0.8]
    card = json.loads((tmp_path / "rank0" / "run" / "model.json").read_text())
    assert card["stopped_early"] and card["best_epoch"] == 2


def test_cifar10_train_nproc_runs_torchrun_and_returns_its_exit_code(tmp_path):
    data = write_image_folder(tiny_dataset(), tmp_path / "data")
    cifar10 = Path(sys.executable).with_name("cifar10")
    command = [
        str(cifar10),
        "train",
        "--nproc",
        "2",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "--batch-size",
        "40",
        "--set",
        "model_config.widths=[8, 16, 16]",
        "--set",
        "whiten_images=100",
    ]
    env = {**os.environ, "CI": "1"}
    job = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert job.returncode == 0, job.stderr
    assert len([line for line in job.stdout.splitlines() if line.startswith("epoch")]) == 1  # rank 0 only
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["world_size"] == 2 and config["recipe"]["model_config"]["widths"] == [8, 16, 16]
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "run" / "report.md").is_file()

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert again.returncode == 2  # the workers' own exit code (a user error), not torchrun's generic 1
    assert again.stderr.count("run folder exists") == 1, again.stderr  # said once, by rank 0
    assert "exited with code 2" in again.stderr.splitlines()[-1]


def test_bad_recipe_fails_before_any_process_starts(capsys):
    from cifar10_classifier.cli import main

    assert main(["train", "--nproc", "2", "--recipe", "no-such-recipe"]) == 2
    assert "unknown recipe" in capsys.readouterr().err
    assert main(["train", "--nproc", "3", "--batch-size", "40"]) == 2
    assert "batch size 40 does not split over 3 processes" in capsys.readouterr().err


def test_sync_batchnorm_conversion_keeps_parameters_frozen_flags_and_names():
    from cifar10_classifier.models import create_model
    from cifar10_classifier.training.distributed import CpuSyncBatchNorm, convert_sync_batchnorm

    model = create_model("fast-net", widths=[8, 16, 16])
    reference = copy.deepcopy(model)
    norm_weights = {name: p for name, p in model.named_parameters() if "norm" in name and name.endswith("weight")}
    names = list(model.state_dict())
    converted = convert_sync_batchnorm(model, torch.device("cpu"))
    assert list(converted.state_dict()) == names
    layers = [module for module in converted.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    assert layers and all(isinstance(layer, CpuSyncBatchNorm) for layer in layers)
    for name, parameter in converted.named_parameters():
        if name in norm_weights:
            assert parameter is norm_weights[name] and not parameter.requires_grad  # ScaleFreeBatchNorm's frozen scale
    images = torch.randn(4, 3, 32, 32)
    assert torch.equal(converted(images), reference(images))  # no process group: plain batch norm, same statistics
    assert torch.equal(converted.eval()(images), reference.eval()(images))
