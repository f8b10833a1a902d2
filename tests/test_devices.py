"""Device and precision choices: the rules for CUDA and MPS are pure functions, tested on any machine."""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import pytest
import torch

from grounded_sam import GroundedSam, InputError, load_sam
from grounded_sam.runtime.devices import (
    Accelerators,
    accelerators,
    choose_device,
    choose_precision,
    frees_into_host_heap,
    resolve_device,
)

NONE = Accelerators()
AMPERE_X2 = Accelerators(cuda_devices=2, cuda_capability=(8, 6))
TURING = Accelerators(cuda_devices=1, cuda_capability=(7, 5))
APPLE = Accelerators(mps=True)
EVERYTHING = Accelerators(cuda_devices=1, cuda_capability=(9, 0), mps=True, cpu_bf16=True)
BF16_CPU = Accelerators(cpu_bf16=True)  # AVX512-BF16 or AMX


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        ("auto", NONE, "cpu"),
        ("auto", APPLE, "mps"),
        ("auto", AMPERE_X2, "cuda:0"),
        ("auto", EVERYTHING, "cuda:0"),  # CUDA before MPS
        ("", NONE, "cpu"),
        ("cpu", EVERYTHING, "cpu"),
        ("CUDA", AMPERE_X2, "cuda:0"),
        ("cuda:1", AMPERE_X2, "cuda:1"),
        ("mps", APPLE, "mps"),
    ],
)
def test_device_choice(requested, available, expected):
    assert choose_device(requested, available) == expected


@pytest.mark.parametrize(
    ("requested", "available", "says"),
    [
        ("cuda", NONE, "no CUDA GPU"),
        ("cuda:2", AMPERE_X2, "devices 0..1"),
        ("mps", AMPERE_X2, "Apple silicon"),
        ("gpu", EVERYTHING, "auto, cpu, cuda, cuda:N or mps"),
        ("cuda:x", AMPERE_X2, "auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_unavailable_device_is_a_clear_error(requested, available, says):
    with pytest.raises(InputError, match=says):
        choose_device(requested, available)


@pytest.mark.parametrize(
    ("requested", "device", "available", "expected"),
    [
        ("auto", "cuda", AMPERE_X2, "bf16"),
        ("auto", "cuda", TURING, "fp32"),  # bf16 is emulated before compute capability 8.0
        ("auto", "cpu", EVERYTHING, "fp32"),
        ("auto", "mps", APPLE, "fp32"),
        ("fp16", "cuda", TURING, "fp16"),
        ("bf16", "cpu", BF16_CPU, "bf16"),  # asked for explicitly, on a CPU that has it: honoured
        ("bf16", "cuda", TURING, "bf16"),  # asked for explicitly: honoured
        ("fp32", "cuda", AMPERE_X2, "fp32"),
    ],
)
def test_precision_choice(requested, device, available, expected):
    assert choose_precision(requested, device, available) == expected


def test_fp16_on_cpu_runs_as_fp32_with_a_warning():
    with pytest.warns(UserWarning, match="fp16 on a CPU"):
        assert choose_precision("fp16", "cpu", NONE) == "fp32"
    with pytest.warns(UserWarning, match="fp16 on a CPU"):
        assert choose_precision("fp16", "cpu", BF16_CPU) == "fp32"
    with pytest.raises(InputError, match="auto, fp32, bf16, fp16"):
        choose_precision("fp8", "cpu", NONE)


def test_bf16_on_a_cpu_without_native_bf16_runs_as_fp32_with_a_warning():
    with pytest.warns(UserWarning, match="no native bf16"):
        assert choose_precision("bf16", "cpu", APPLE) == "fp32"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_precision("bf16", "cpu", BF16_CPU) == "bf16"


def test_this_machine_resolves_to_what_torch_offers():
    expected = "cuda:0" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto") == torch.device(expected)
    assert accelerators().cuda_devices == torch.cuda.device_count()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and platform.machine() in ("x86_64", "AMD64"):  # the kernel's own word on the CPU's features
        flags = set(cpuinfo.read_text().split())
        assert accelerators().cpu_bf16 == bool(flags & {"avx512_bf16", "amx_bf16"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_loader_refuses_a_missing_gpu_before_reading_the_file(tmp_path):
    with pytest.raises(InputError, match="no CUDA GPU"):
        load_sam(tmp_path / "not-even-there.pth", device="cuda")


def test_loaders_place_the_model_and_the_pipeline_moves_both(sam_checkpoint, detector):
    segmenter = load_sam(sam_checkpoint, device="cpu")
    assert segmenter.device == torch.device("cpu")
    pipeline = GroundedSam(detector, segmenter).to("cpu")
    assert pipeline.detector.device == pipeline.segmenter.device == torch.device("cpu")
    assert pipeline.precision == "auto" and pipeline.effective_precision() == choose_precision("auto", "cpu", accelerators())
    with pytest.raises(InputError, match="precision must be one of"):
        GroundedSam(detector, segmenter, "half")


@pytest.mark.parametrize(("precision", "says"), [("fp16", "fp16 on a CPU"), ("bf16", "no native bf16")])
def test_slow_half_precision_pipeline_on_cpu_gives_the_fp32_result(detector, segmenter, zidane, precision, says, no_native_bf16):
    from scenes import PROMPT, top_score

    from grounded_sam import DetectionSettings

    settings = DetectionSettings(top_score(detector, zidane) - 0.02, 0.2)
    exact = GroundedSam(detector, segmenter, "fp32").segment(zidane, PROMPT, settings)
    with pytest.warns(UserWarning, match=says):
        mapped = GroundedSam(detector, segmenter, precision).segment(zidane, PROMPT, settings)
    assert len(exact) >= 1
    torch.testing.assert_close(mapped.boxes, exact.boxes, atol=0, rtol=0)
    assert torch.equal(mapped.masks, exact.masks)


def test_only_a_cpu_s_freed_tensors_stay_in_the_c_library_s_heap():
    assert frees_into_host_heap("cpu")
    assert not frees_into_host_heap("cuda") and not frees_into_host_heap("mps")
