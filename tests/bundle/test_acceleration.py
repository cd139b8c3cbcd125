"""Compiled and bfloat16 forward passes (seglab.bundle.acceleration) agree with eager float32.

Speed is measured in benchmarks/ (B1, B2), never here; these tests check that the fast paths
give the eager results, when they switch on, and that they fall back cleanly.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.data import MetaTensor
from monai.networks.nets import UNet

from seglab.bundle import TilingInferer
from seglab.bundle.acceleration import (
    TRAIN_COMPILE_AFTER_FLOP,
    NetworkRunner,
    check_compile_mode,
    check_precision,
    compile_training,
    compile_unavailable,
    even_batches,
    plain_tensor_batch,
    training_network,
)
from seglab.bundle.stacks import AdjacentSliceInferer
from seglab.errors import SeglabError

needs_compiler = pytest.mark.skipif(
    compile_unavailable("cpu") is not None, reason="torch.compile needs a C++ compiler"
)


def _unet(in_channels: int = 3, classes: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(2, in_channels, classes, (4, 8, 16), (2, 2), num_res_units=1).eval()


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", "auto"), ("ON", "on"), ("off", "off"), (True, "on"), (False, "off"),
     ("true", "on"), ("false", "off")],
)  # fmt: skip
def test_compile_modes_are_read_from_words_and_bools(value, expected):
    assert check_compile_mode(value) == expected


@pytest.mark.parametrize("value", ["sometimes", 1, None])
def test_an_unknown_compile_mode_is_a_one_line_error(value):
    with pytest.raises(SeglabError, match="compile must be one of auto, on, off"):
        check_compile_mode(value)


def test_precisions():
    assert check_precision("bfloat16") == "bfloat16"
    with pytest.raises(SeglabError, match="precision must be one of float32, bfloat16"):
        check_precision("float16")


@pytest.mark.parametrize(
    ("count", "batch_size", "expected"),
    [(81, 16, 14), (16, 16, 16), (17, 16, 9), (1, 16, 1), (7, 4, 4), (0, 16, 16), (5, 1, 1)],
)
def test_even_batches_split_into_few_nearly_equal_batches(count, batch_size, expected):
    size = even_batches(count, batch_size)
    assert size == expected
    if count:
        batches = -(-count // size)
        assert batches == -(-count // batch_size)  # no more forward passes than before
        assert batches * size - count < batches  # fewer padded items than batches


def test_training_compiles_only_runs_long_enough_to_pay(monkeypatch):
    from seglab.networks.profile import forward_flops

    network = _unet()
    side = 32
    per_patch = 3 * forward_flops(network, (1, 3, side, side))
    enough = -(-int(TRAIN_COMPILE_AFTER_FLOP) // per_patch)  # patches that reach the threshold
    assert compile_training("off", "cpu", 10**12, side, network, 3) is False
    assert compile_training("auto", "cpu", 10**12, side) is False  # no network: no estimate
    if compile_unavailable("cpu") is None:
        assert compile_training("auto", "cpu", enough, side, network, 3) is True
        assert compile_training("auto", "cpu", enough - 1, side, network, 3) is False
        assert compile_training("auto", "cpu", enough, (side, side), network, 3) is True
        assert compile_training("on", "cpu", 1, 8) is True
    monkeypatch.setenv("PATH", "")  # no compiler to be found
    monkeypatch.delenv("CXX", raising=False)
    assert compile_unavailable("cpu") == "no C++ compiler (g++, c++ or clang++) on PATH"
    assert compile_training("auto", "cpu", 10**12, side, network, 3) is False
    with pytest.raises(SeglabError, match="compile=on but torch.compile cannot run here"):
        compile_training("on", "cpu", 1, side)


# ------------------------------------------------------------------------------ runner
def test_off_and_training_mode_never_compile():
    network = _unet()
    runner = NetworkRunner(compile="off")
    batch = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        runner(network, batch)
    assert not runner.is_compiled(network)
    network.train()
    always = NetworkRunner(compile="on")
    with torch.no_grad():
        always(network, batch)
    assert not always.is_compiled(network)


def test_auto_counts_pixels_before_compiling(monkeypatch):
    compiled = []
    real_compile = torch.compile

    def counting_compile(module, **kwargs):
        compiled.append(module)
        return real_compile(module, backend="eager", **kwargs)  # no code generation here

    monkeypatch.setattr(torch, "compile", counting_compile)
    network = _unet()
    runner = NetworkRunner(compile="auto", compile_after_pixels=3 * 32 * 32)
    batch = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        runner(network, batch)  # 2 images of 32 x 32 px seen
        assert not compiled
        runner(network, batch)  # 4 seen: due at the next call
        assert not compiled
        runner(network, batch)
    assert compiled == [network] and runner.is_compiled(network)


def test_auto_keeps_bfloat16_eager_on_a_cpu():
    network = _unet()
    runner = NetworkRunner(compile="auto", precision="bfloat16", compile_after_pixels=0)
    with torch.inference_mode():
        out = runner(network, torch.rand(2, 3, 32, 32))
    assert not runner.is_compiled(network)
    assert out.dtype == torch.bfloat16


def test_without_a_compiler_the_network_runs_eagerly_with_one_warning(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    network = _unet()
    runner = NetworkRunner(compile="on")
    batch = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        expected = network(batch)
        with pytest.warns(UserWarning, match="without torch.compile: no C\\+\\+ compiler"):
            first = runner(network, batch)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = runner(network, batch)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert not runner.is_compiled(network)


def test_a_failing_compilation_falls_back_to_eager(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("inductor exploded\nsecond line")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: broken)
    network = _unet()
    runner = NetworkRunner(compile="on")
    batch = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        with pytest.warns(UserWarning, match=r"torch.compile failed \(RuntimeError: inductor "):
            out = runner(network, batch)
        assert torch.equal(out, network(batch))
    assert not runner.is_compiled(network)


# ------------------------------------------------------------------------------ agreement
@needs_compiler
@pytest.mark.slow
def test_compiled_tiling_inference_agrees_with_eager():
    """Real inductor code on a small U-Net; 7 tiles in batches of 4 exercise the padding."""
    network = _unet()
    image = torch.rand(2, 3, 32, 224)  # 1 x 7 tiles of 32 px per image: 14 tiles
    eager = TilingInferer(tile_size=32, stride=32, batch_size=4, compile="off")
    compiled = TilingInferer(tile_size=32, stride=32, batch_size=4, compile="on")
    expected = eager(image, network)
    got = compiled(image, network)
    assert compiled.runner.is_compiled(network)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(got.argmax(1), expected.argmax(1))


@needs_compiler
@pytest.mark.slow
def test_compiled_adjacent_slice_inference_agrees_with_eager():
    network = _unet(in_channels=3, classes=2, seed=1)
    stacks = torch.rand(1, 1, 5, 32, 32)
    eager = AdjacentSliceInferer(3, roi_size=(16, 16), slice_batch_size=2, compile="off")
    compiled = AdjacentSliceInferer(3, roi_size=(16, 16), slice_batch_size=2, compile="on")
    with torch.inference_mode():
        expected = eager(stacks, network)
        got = compiled(stacks, network)
    assert compiled.runner.is_compiled(network)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_bfloat16_tiling_inference_is_close_to_float32():
    network = _unet()
    image = torch.rand(1, 3, 64, 64)
    full = TilingInferer(tile_size=32, stride=32, compile="off")(image, network)
    half = TilingInferer(tile_size=32, stride=32, compile="off", precision="bfloat16")(
        image, network
    )
    assert half.dtype == torch.float32 and half.shape == full.shape
    scale = full.abs().max()
    assert (half - full).abs().max() <= 0.05 * scale  # bf16 keeps 8 bits of mantissa


# ------------------------------------------------------------------------------ training
def test_training_network_is_the_network_itself_unless_compiling():
    network = _unet()
    assert training_network(network, False) is network


@needs_compiler
@pytest.mark.slow
def test_compiled_training_gives_the_eager_gradients():
    network = _unet().train()
    twin = _unet().train()  # same seed: same weights
    compiled = training_network(twin, True)
    # the optimiser and the checkpoints keep the network's own parameters
    assert all(a is b for a, b in zip(compiled.parameters(), twin.parameters(), strict=True))
    batch, target = torch.rand(2, 3, 32, 32), torch.rand(2, 4, 32, 32)
    for model in (network, compiled):
        torch.nn.functional.mse_loss(model(batch), target).backward()
    for (name, a), b in zip(network.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_compiled_training_falls_back_to_eager_when_compiling_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no code today")

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: broken)
    network = _unet().train()
    compiled = training_network(network, True)
    batch = torch.rand(2, 3, 32, 32)
    with pytest.warns(UserWarning, match="torch.compile failed in training"):
        out = compiled(batch)
    torch.testing.assert_close(out, network(batch))


def test_plain_tensor_batch_strips_meta_data():
    image = MetaTensor(torch.rand(2, 3, 8, 8), meta={"filename_or_obj": ["a", "b"]})
    label = MetaTensor(torch.rand(2, 1, 8, 8))
    inputs, targets = plain_tensor_batch({"image": image, "label": label}, torch.device("cpu"))
    assert type(inputs) is torch.Tensor and type(targets) is torch.Tensor
    assert torch.equal(inputs, image.as_tensor()) and torch.equal(targets, label.as_tensor())
