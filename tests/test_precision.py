"""Training precision: bf16 autocast against fp32, layer by layer, in the project's U-Net.

Under CPU autocast every convolution (and transposed convolution) rounds its input, weight and
bias to bf16, multiplies, sums in fp32 and rounds its output to bf16; batch norm, ReLU and max
pooling then work on those bf16 tensors, batch norm rounding its output again. Backward rounds
the incoming gradient to bf16 at every layer. bf16 keeps 8 significand bits: round to nearest
gives ``fl(a) = a (1 + d)`` with ``|d| <= u = 2**-8``.

The bound, for one layer. Take the rounding errors ``d`` as independent, mean 0, with
``E[d**2] <= u**2 / 3`` (uniform on ``[-u, u]``; for values spread over a binade it is nearer
``0.18 u**2``). A convolution output ``y = sum_k x_k w_k + b`` then has

    E[(y_bf16 - y)**2] <= u**2 / 3 * (2 * sum_k x_k**2 w_k**2 + b**2 + y**2)

from rounding the input, the weight, the bias and the output. When the K products have random
signs, ``y**2`` is about ``sum_k x_k**2 w_k**2`` and the relative error is about ``u`` for any
K; when they cancel more, as a weight gradient's K = batch x height x width products ``g x`` do,
the ratio grows, and with ``|y|`` the size of one product the error reaches ``sqrt(K) u``. So the
test takes the sums of squares from each layer's own fp32 tensors (the layer run on ``x**2``
with weights ``w**2``, and its backward on ``g**2``): every layer gets the error its data
predicts. (``sqrt(K) u`` is also what summing in bf16 itself would add; PyTorch's CPU kernels
sum bf16 products in fp32, where that term is ``sqrt(K) 2**-24``, under 1% of the rest even at
K = 8192.) Weight and bias gradients follow the same formula with the output gradient ``g`` in
place of the weight (``dW = sum g x``, ``db = sum g``); batch norm's ``(x - mean) / s`` turns a
rounding of ``x`` into an error of ``u x / s`` (``x`` still holds the mean): its ``x**2 / s**2``
terms. Over the n values of an output or gradient the squared Frobenius error concentrates at
its expectation (relative spread about ``1 / sqrt(n)``); the test allows twice the predicted
relative Frobenius error.

Measured (Intel Xeon with AMX, torch 2.13): errors are 0.42 to 0.95 of the prediction, typically
0.73 = sqrt(0.18 / (1/3)), the highest for batch-norm shifts of a few channels; the same layers
computed exactly from operands rounded to 8 bits give the same ratios to three digits, so the
kernels' fp32 sums add nothing visible.

Each layer is checked on its own: given exactly the fp32 run's input and output gradient, it
runs under autocast and is compared with its fp32 result. Whole-network gradients would measure
something else: by the middle of the network activations carry a few percent of accumulated
rounding, so about 1% of the ReLUs pass the gradient in one precision and not the other, and
whole-network gradients differ by tens of percent for a reason that is not bf16 arithmetic.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch
from support import compose_train
from torch import nn

from seg.losses import DiceLoss
from seg.models.unet import UNet
from seg.training.pipeline import build_trainer

U = 2.0**-8  # bf16 unit roundoff: 8 significand bits, round to nearest
ALLOWED = 2.0  # times the predicted relative error (see the module docstring)
ROUNDING_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)


def _bf16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1))
        return out.dtype == torch.bfloat16
    except (RuntimeError, TypeError):
        return False


pytestmark = pytest.mark.skipif(not _bf16_autocast_works(), reason="no bf16 autocast on CPU in this torch")


@dataclass
class Layer:
    """One layer that rounds, and what it saw in the fp32 run: its input and output gradient."""

    name: str
    module: nn.Module
    x: torch.Tensor
    g: torch.Tensor


def _fp32_layers() -> list[Layer]:
    """Run a small U-Net in fp32, training mode, with the project's loss; keep each layer's input
    and output gradient."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = UNet(in_channels=3, num_classes=13, base_channels=8).train()
        images, target = torch.rand(2, 3, 64, 64), torch.randint(0, 13, (2, 64, 64))
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False  # the same values; lets the gradient of a batch norm output be kept
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen[name] = {"x": inputs[0].detach().clone()}
            output.register_hook(lambda grad: seen[name].__setitem__("g", grad.detach().clone()))

        return hook

    modules = dict(net.named_modules())
    for name, module in modules.items():
        if isinstance(module, ROUNDING_LAYERS):
            module.register_forward_hook(keep(name))
    DiceLoss(smooth=1.0)(net(images), target).backward()
    rounding = [name for name, module in modules.items() if isinstance(module, ROUNDING_LAYERS)]
    assert sorted(seen) == sorted(rounding) and all("g" in value for value in seen.values())
    return [Layer(name, modules[name], value["x"], value["g"]) for name, value in seen.items()]


def _rounded(t: torch.Tensor, bits: int) -> torch.Tensor:
    """``t`` rounded to ``bits`` significand bits, to nearest (8 bits: exactly bf16's rounding)."""
    mantissa, exponent = torch.frexp(t)
    return torch.ldexp(torch.round(mantissa * 2**bits) / 2**bits, exponent)


def _relative(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.double() - exact.double()).norm() / exact.double().norm())


@functools.cache
def _seg_bf16_trainer() -> pl.Trainer:
    """The trainer ``seg.train`` builds for ``trainer=cpu trainer.precision=bf16-mixed``: its
    precision plugin's forward context is what training steps run in."""
    cfg = compose_train(
        ["trainer=cpu", "trainer.precision=bf16-mixed", "logger=none", "paths.output_dir=unused"]
    )
    return build_trainer(cfg)


def _run(module: nn.Module, x: torch.Tensor, g: torch.Tensor, autocast: bool) -> dict[str, torch.Tensor]:
    """The layer's output and parameter gradients, in fp32 or as ``seg``'s bf16 trainer runs a
    training step's forward pass (its precision plugin's autocast)."""
    layer = copy.deepcopy(module)
    if autocast and isinstance(layer, nn.BatchNorm2d):
        x = x.to(torch.bfloat16)  # what the convolution before it hands over under autocast
    with _seg_bf16_trainer().precision_plugin.forward_context() if autocast else contextlib.nullcontext():
        y = layer(x)
    y.backward(g.to(y.dtype))
    return {"out": y.detach(), **{name: p.grad for name, p in layer.named_parameters()}}


def _emulated(module: nn.Module, x: torch.Tensor, g: torch.Tensor, bits: int) -> dict[str, torch.Tensor]:
    """What ``_run`` under autocast computes, from a kernel that rounds to ``bits`` significand
    bits and sums exactly (fp64)."""
    layer = copy.deepcopy(module).double()
    convolution = not isinstance(layer, nn.BatchNorm2d)
    if convolution:
        with torch.no_grad():
            for p in layer.parameters():
                p.copy_(_rounded(p, bits))
    y = layer(_rounded(x.double(), bits))
    y.backward(_rounded(g.double(), bits))
    grads = {name: _rounded(p.grad, bits) if convolution else p.grad for name, p in layer.named_parameters()}
    return {"out": _rounded(y.detach(), bits), **grads}  # batch norm: fp32 parameter gradients


def _predicted(layer: Layer, exact: dict[str, torch.Tensor]) -> dict[str, float]:
    """Predicted relative Frobenius error of the output and of each parameter's gradient."""
    x, g = layer.x.double(), layer.g.double()
    module = layer.module
    variance: dict[str, torch.Tensor] = {}
    if isinstance(module, nn.BatchNorm2d):
        dims = (0, 2, 3)
        s = (x.var(dims, unbiased=False, keepdim=True) + module.eps).sqrt()
        x_hat = (x - x.mean(dims, keepdim=True)) / s
        gamma = module.weight.detach().double().view(1, -1, 1, 1)
        variance["out"] = (gamma**2 * x**2 / s**2 + exact["out"].double() ** 2).sum()
        variance["weight"] = (g**2 * (x_hat**2 + x**2 / s**2)).sum()
        variance["bias"] = (g**2).sum()
    else:
        squares = copy.deepcopy(module).double()
        with torch.no_grad():
            for p in squares.parameters():
                p.square_()
        sums = squares(x**2)  # sum_k x_k**2 w_k**2 + b**2 for every output
        sums.backward(g**2)  # and, by linearity, sum g**2 x**2 (weight) and sum g**2 (bias)
        variance["out"] = 2 * sums.detach().sum() + (exact["out"].double() ** 2).sum()
        for name, p in squares.named_parameters():
            assert p.grad is not None
            variance[name] = 2 * p.grad.sum() + (exact[name].double() ** 2).sum()
    return {
        key: math.sqrt(U**2 / 3 * float(value)) / float(exact[key].double().norm())
        for key, value in variance.items()
    }


@pytest.fixture(scope="module")
def layers() -> list[Layer]:
    return _fp32_layers()


def _too_far(
    layers: list[Layer], compute: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
) -> tuple[list[str], int]:
    """The outputs and parameter gradients ``compute`` gets further from fp32 than allowed, of how many."""
    too_far, checked = [], 0
    for layer in layers:
        exact = _run(layer.module, layer.x, layer.g, autocast=False)
        approx = compute(layer.module, layer.x, layer.g)
        for key, predicted in _predicted(layer, exact).items():
            error = _relative(approx[key], exact[key])
            checked += 1
            if not error <= ALLOWED * predicted:  # NaN and inf fail too
                too_far.append(f"{layer.name} {key}: {error:.2e} > {ALLOWED} x {predicted:.2e}")
    return too_far, checked


def test_bf16_autocast_rounds_each_layer_as_bf16_predicts(layers: list[Layer]) -> None:
    """Every convolution, transposed convolution and batch norm of the U-Net: its output and each
    of its parameters' gradients under bf16 autocast within twice the error bf16 predicts."""

    def bf16(module: nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
        result = _run(module, x, g, autocast=True)
        assert result["out"].dtype == torch.bfloat16  # the layer did run in bf16
        return result

    too_far, checked = _too_far(layers, bf16)
    assert checked == sum(1 + len(list(layer.module.parameters())) for layer in layers)
    assert not too_far, "\n".join(too_far)


def test_a_kernel_with_fewer_bits_fails_every_check(layers: list[Layer]) -> None:
    """The check has teeth: the same layers computed from operands and results rounded to 8 bits
    pass, as autocast does; rounded to 5 bits (8 times bf16's error), every check fails. (With 6
    bits, 4 times the error, 97% fail here.)"""
    assert _too_far(layers, lambda m, x, g: _emulated(m, x, g, bits=8))[0] == []
    # seg's bf16 training rounds as 8-bit operands do: the same error, check by check (measured:
    # within 0.02% on a Xeon with AMX); training that stayed in fp32 would have errors near 0 here.
    for layer in layers:
        exact = _run(layer.module, layer.x, layer.g, autocast=False)
        seg_bf16 = _run(layer.module, layer.x, layer.g, autocast=True)
        emulated = _emulated(layer.module, layer.x, layer.g, bits=8)
        for key in exact:
            ratio = _relative(seg_bf16[key], exact[key]) / _relative(emulated[key], exact[key])
            assert 0.95 < ratio < 1.05, (layer.name, key, ratio)
    too_far, checked = _too_far(layers, lambda m, x, g: _emulated(m, x, g, bits=5))
    assert len(too_far) == checked
