"""`cifar10 serve` settings: flags over CIFAR10_* variables over defaults, and workers sharing the cores."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cifar10_classifier.cli import build_parser
from cifar10_classifier.cli.serve import resolve_settings, settings_environment
from cifar10_classifier.serve.settings import Settings


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_flags_override_the_environment_which_overrides_defaults(monkeypatch):
    monkeypatch.setenv("CIFAR10_PORT", "9001")
    monkeypatch.setenv("CIFAR10_MAX_WAIT_MS", "4.5")
    settings = resolve_settings(parse("--port", "9002", "--workers", "2", "--model", "m.onnx"))
    assert settings.port == 9002  # the flag wins
    assert settings.max_wait_ms == 4.5  # the environment fills what no flag set
    assert settings.workers == 2 and settings.model == Path("m.onnx")
    lingering = resolve_settings(parse("--linger-max-bytes", "1024", "--linger-timeout", "0.5"))
    assert (lingering.linger_max_bytes, lingering.linger_timeout_s) == (1024, 0.5)


def test_workers_split_the_cores_instead_of_oversubscribing(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert resolve_settings(parse("--workers", "2")).threads == 2
    assert resolve_settings(parse("--workers", "4")).threads == 1
    assert resolve_settings(parse("--workers", "8")).threads == 1
    default = resolve_settings(parse())
    assert default.workers == 4 and default.threads == 1
    assert resolve_settings(parse("--workers", "2", "--threads", "3")).threads == 3  # explicit wins


def test_every_worker_reads_back_the_same_settings(monkeypatch):
    settings = resolve_settings(parse("--workers", "2", "--model", "m.onnx", "--max-in-flight", "7", "--timeout", "3"))
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


def test_an_impossible_setting_is_one_line_naming_it(monkeypatch):
    from cifar10_classifier.errors import UserError

    with pytest.raises(UserError, match=r"invalid server setting: linger_timeout_s: .*-1"):
        resolve_settings(parse("--linger-timeout", "-1"))
    monkeypatch.setenv("CIFAR10_LINGER_MAX_BYTES", "lots")
    with pytest.raises(UserError, match="linger_max_bytes"):
        resolve_settings(parse())
