import pytest
import torch

import cifarlab
from cifarlab.device import describe_hardware, resolve_device, resolve_precision
from tests.factories import make_dataset


def test_auto_device_and_precision_follow_the_machine():
    device = resolve_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_precision("fp32", device) == "fp32"
    assert resolve_precision("auto", device) in ("bf16", "fp32")


def test_hardware_names_the_cpu_model_threads_and_bf16_support(monkeypatch):
    cpuinfo = "processor : 0\nmodel name\t: Intel(R) Xeon(R)  Platinum 8481C\nflags : fpu amx_bf16 avx512_bf16\n"
    monkeypatch.setattr("cifarlab.device._cpuinfo", lambda: cpuinfo)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert describe_hardware(torch.device("cpu")) == "Intel(R) Xeon(R) Platinum 8481C, 2 threads, AMX-BF16"
    monkeypatch.setattr("cifarlab.device._cpuinfo", lambda: "model name : AMD EPYC 9B14\nflags : avx2\n")
    assert describe_hardware(torch.device("cpu")) == "AMD EPYC 9B14, 2 threads, no bf16 hardware"
    masked = "cpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\nflags : avx512_bf16\n"
    monkeypatch.setattr("cifarlab.device._cpuinfo", lambda: masked)
    assert describe_hardware(torch.device("cpu")) == "AMD EPYC (family 25, model 17), 2 threads, AVX512-BF16"


def test_cuda_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="--device cuda was asked for"):
        resolve_device("cuda")


def test_bf16_autocast_trains_on_cpu(tmp_path):
    dataset = make_dataset(train=64, test=32)
    result = cifarlab.train("proyecto1", dataset=dataset, epochs=2, batch_size=32, val_size=0, device="cpu",
                            precision="bf16", out=str(tmp_path / "r"), quiet=True)  # fmt: skip
    assert all(v == v for v in result.history.history["loss"])  # no NaN


@pytest.mark.slow
def test_compiled_model_trains_and_matches_its_checkpoint(tmp_path):
    dataset = make_dataset(train=64, test=32)
    result = cifarlab.train("proyecto1", dataset=dataset, epochs=1, batch_size=32, val_size=0, compile=True,
                            precision="fp32", out=str(tmp_path / "r"), quiet=True)  # fmt: skip
    assert "_orig_mod" not in "".join(cifarlab.load(result.run_dir).model.state_dict())


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["proyecto9", "fast88"])
def test_trains_on_cuda(preset, tmp_path):
    result = cifarlab.train(preset, dataset=make_dataset(train=128, test=64), epochs=2, batch_size=32, val_size=32,
                            device="cuda", out=str(tmp_path / "r"), quiet=True)  # fmt: skip
    assert result.history.history["loss"][-1] < result.history.history["loss"][0]


def test_flush_denormals_flushes_in_multithreaded_ops_and_turns_off():
    from cifarlab.device import flush_denormals, set_flush_denormal_all_threads

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.full((1_000_000,), 1e-39).mul_(1.0)  # the pool exists before the flag is set, as in a Trainer
        flush_denormals(torch.device("cpu"))
        y = torch.full((1_000_000,), 1e-39).mul_(1.0)  # split across both threads
        assert torch.count_nonzero(y) == 0
        set_flush_denormal_all_threads(False)
        y = torch.full((1_000_000,), 1e-39).mul_(1.0)
        assert torch.count_nonzero(y) == y.numel()
    finally:
        set_flush_denormal_all_threads(False)
        torch.set_num_threads(threads)
