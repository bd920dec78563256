"""The machine record and the precision choice, on every CPU: flags and the environment are given, not read."""

import pytest

from cifar10_classifier import machine
from cifar10_classifier.machine import PRECISION_ENV, choose_precision

AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma"}
ZEN4 = AVX2_ONLY | {"avx512f", "avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize(
    ("flags", "used", "reason"),
    [
        (AVX2_ONLY, "fp32", "auto -> fp32: this CPU has no native bf16 (no avx512_bf16 or amx_bf16)"),
        (ZEN4, "bf16", "auto -> bf16: avx512_bf16"),
        (SAPPHIRE_RAPIDS, "bf16", "auto -> bf16: amx_bf16 avx512_bf16"),
    ],
    ids=["zen3", "zen4", "sapphire-rapids"],
)
def test_auto_takes_bf16_only_where_the_cpu_has_it(flags, used, reason):
    choice = choose_precision("auto", "cpu", environ={}, flags=flags)
    assert (choice.used, choice.reason, choice.bf16) == (used, reason, used == "bf16")


def test_a_recipe_that_pins_its_precision_gets_it_on_any_cpu():
    for flags in (AVX2_ONLY, SAPPHIRE_RAPIDS):
        for asked in ("fp32", "bf16"):
            choice = choose_precision(asked, "cpu", environ={PRECISION_ENV: "bf16"}, flags=flags)
            assert choice.used == asked and choice.reason == f"{asked}: the recipe asks for it"


def test_the_environment_decides_what_auto_means():
    assert choose_precision("auto", environ={PRECISION_ENV: "fp32"}, flags=ZEN4).reason == (
        f"auto -> fp32: {PRECISION_ENV}=fp32"
    )
    assert choose_precision("auto", environ={PRECISION_ENV: "BF16"}, flags=AVX2_ONLY).used == "bf16"
    assert choose_precision("auto", environ={PRECISION_ENV: "auto"}, flags=AVX2_ONLY).used == "fp32"
    assert choose_precision("auto", "cuda", environ={}, flags=AVX2_ONLY).reason == "auto -> bf16: CUDA"
    with pytest.raises(ValueError, match=r"\$CIFAR10_PRECISION must be one of auto, fp32, bf16, not 'fp16'"):
        choose_precision("auto", environ={PRECISION_ENV: "fp16"})
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("half")


def test_machine_info_names_what_a_speed_figure_depends_on(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(SAPPHIRE_RAPIDS))
    info = machine.machine_info()
    assert {"cpu", "cores", "simd", "native_bf16", "python", "platform"} <= set(info)
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= set(info["simd"]) and "sse4_2" not in info["simd"]
    assert info["native_bf16"] == ["amx_bf16", "avx512_bf16"]
    assert info["cores"] == machine.usable_cores() >= 1


def test_the_real_cpu_is_read():
    flags = machine.cpu_flags()
    assert isinstance(flags, frozenset)
    assert machine.cpu_has_native_bf16() == bool(machine.native_bf16_flags(flags))
    assert machine.cpu_model()
