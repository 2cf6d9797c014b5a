"""Does gradfeat work on an architecture? Every check the coverage sweep runs.

For one backbone (random weights, BatchNorm statistics randomised so folding is
exercised) and its default θ2:

- **runs**: :func:`linearize` builds, passes its self-check, and w2 trains in float32;
- **exact**: the JVP with folding and NTK scaling off equals central finite
  differences of the *original* model in float64 (relative error), and so does
  the JVP with NTK scaling on, along each tangent times its documented scale
  (:func:`~gradfeat_plugin.linearize.ntk_scales` of the original modules);
- **f unchanged**: the linearised model's features equal the original's;
- **cache**: θ1's outputs of a batch of 3, sliced to 2, give the same ``(f, J·w)`` (float64)
  as the images themselves;
- **real θ2**: the default θ2 holds a conv or linear weight and ≥ 1 % of the
  parameters;
- **step cost**: a gradfeat step over cached θ1 outputs against a fine-tuning
  step of θ2 (median of interleaved pairs).
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from .linearize import linearize, ntk_scales
from .linearize._split import MIN_DEFAULT_SHARE, WEIGHTED_LAYERS, _num_params
from .linearize._stateful import bypass_eval_caches

#: Largest relative error of the JVP against finite differences, in float64.
EXACT_TOLERANCE = 1e-6
#: Largest relative error of the float32 features against the original model's.
FEATURE_TOLERANCE = 1e-4
#: Largest relative difference between the cached and the direct path, in float64.
CACHE_TOLERANCE = 1e-9


@dataclass
class CoverageRow:
    """One architecture's results (``None`` where a check could not run)."""

    spec: str
    split: list[str] = field(default_factory=list)
    share: float | None = None
    real_block: bool = False
    engine: str | None = None
    jvp_error: float | None = None
    ntk_jvp_error: float | None = None
    gradient_error: float | None = None
    feature_error: float | None = None
    cache_ok: bool = False
    step_ratio: float | None = None
    error: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.real_block
            and self.jvp_error is not None
            and self.jvp_error <= EXACT_TOLERANCE
            and self.ntk_jvp_error is not None
            and self.ntk_jvp_error <= EXACT_TOLERANCE
            and self.feature_error is not None
            and self.feature_error <= FEATURE_TOLERANCE
            and self.cache_ok
        )


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorm statistics, so folding is not the identity."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
            if m.weight is not None:
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model


@torch.no_grad()
def jitter_zero_parameters(model: nn.Module, seed: int = 0, scale: float = 0.02) -> nn.Module:
    """Small random values in place of exact zeros (zero-initialised biases and
    scales): a fresh network puts them exactly on ReLU kinks, where a finite
    difference is not a derivative."""
    generator = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        zeros = p == 0
        if zeros.any():
            noise = torch.randn(p.shape, generator=generator).to(p) * scale
            p.copy_(torch.where(zeros, noise, p))
    return model


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm() / b.norm().clamp_min(1e-300)).detach())


def _theta2(model: nn.Module, split: list[str]) -> dict[str, nn.Parameter]:
    return {
        n: p
        for n, p in model.named_parameters()
        if any(n.startswith(s + ".") for s in split)
    }


class _Float64Throughout(TorchFunctionMode):
    """Keeps float64 tensors in float64 where a model casts to float32 on purpose
    (timm's EfficientViT attention), so the finite differences have float64 accuracy."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float64:
            if func is torch.Tensor.float:
                return args[0]
            if func is torch.Tensor.to and torch.float32 in (*args[1:], kwargs.get("dtype")):
                return args[0]
        return func(*args, **kwargs)


#: Finite-difference steps tried; the smallest error counts. A step that carries an
#: activation across a ReLU kink gives a large error at that step only, and a model
#: that computes some part in float32 needs a larger step; a wrong JVP is wrong at
#: every step.
FD_STEPS = (1e-6, 1e-7, 1e-5, 1e-9)


@torch.no_grad()
def finite_difference_error(
    model: nn.Module,
    split: list[str],
    x: torch.Tensor,
    engine: str,
    steps: tuple[float, ...] = FD_STEPS,
    ntk: bool = False,
) -> float:
    """Relative error of J·w against ``(f(θ2 + r·w) − f(θ2 − r·w)) / 2r``, float64.

    ``w`` is random, scaled per tensor by the parameter's RMS so that the step is
    relative; folding is off, so w lives in θ2's coordinates. With ``ntk`` the
    linearisation uses the NTK parametrisation and its tangents are set to
    ``w / c``, ``c`` the scale :func:`ntk_scales` documents for each parameter of
    the original model, so that its JVP must again be ``J·w``. The smallest error
    over ``steps`` is returned.
    """
    model64 = copy.deepcopy(model).double().eval()
    x64 = x.double()
    lin = linearize(
        model64, split, fold_bn=False, ntk=ntk, engine=engine, verify=False,
        input_size=tuple(x.shape[1:]),
    )
    names = [name for name, _ in lin.named_tangents()]
    documented = ntk_scales(model64, names) if ntk else {}
    generator = torch.Generator().manual_seed(5)
    directions = {}
    for name, tangent in lin.named_tangents():
        param = dict(model64.named_parameters())[name]
        rms = float(param.pow(2).mean().sqrt()) or 1.0
        direction = torch.randn(tangent.shape, generator=generator, dtype=torch.float64)
        directions[name] = direction * max(rms, 1e-3)
        tangent.copy_(directions[name] / documented.get(name, 1.0))
    errors = []
    with _Float64Throughout():
        _, jvp = lin.features(x64)
    for step in steps:
        plus, minus = copy.deepcopy(model64), copy.deepcopy(model64)
        for model_copy, sign in ((plus, 1.0), (minus, -1.0)):
            bypass_eval_caches(model_copy)
            params = dict(model_copy.named_parameters())
            for name, direction in directions.items():
                params[name].add_(sign * step * direction)
        with _Float64Throughout():
            fd = (plus(x64).flatten(1) - minus(x64).flatten(1)) / (2 * step)
        errors.append(_relative(jvp, fd))
        if errors[-1] <= EXACT_TOLERANCE:
            break
    return min(errors)


def cache_error(model: nn.Module, split: list[str], x: torch.Tensor, engine: str) -> float:
    """Largest relative difference, in float64, between ``(f, J·w)`` from θ1's stored
    outputs of a batch of ``len(x) + 1`` sliced to ``len(x)`` and from the images.

    float64, because float32 kernels may round differently at another batch size
    and a random network amplifies that; the path itself must agree to rounding.
    """
    lin = linearize(
        copy.deepcopy(model).double(), split, engine=engine, verify=False,
        input_size=tuple(x.shape[1:]),
    )
    x = x.double()
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for _, t in lin.named_tangents():
            t.copy_(torch.randn(t.shape, generator=generator, dtype=t.dtype))
    with _Float64Throughout():
        cached = lin.forward_prefix(torch.cat([x, x[:1]]))
        if not all(isinstance(t, torch.Tensor) for t in cached):
            return float("inf")
        f1, j1 = lin.features_from_prefix(tuple(t[: len(x)] for t in cached))
        f2, j2 = lin.features(x)
    return max(_relative(f1, f2), _relative(j1, j2))


def step_ratio(
    model: nn.Module, split: list[str], x: torch.Tensor, engine: str, pairs: int = 3
) -> float:
    """Median over interleaved pairs of (gradfeat step) / (fine-tune θ2 step), both
    from cached θ1 outputs, each a forward, cross-entropy and backward."""
    from .protocols import SplitNetwork

    lin = linearize(model, split, engine=engine, verify=False, input_size=x.shape[1:])
    lin.reset_classifier(10)
    network = SplitNetwork(model, split)
    for p in network.theta2():
        p.requires_grad_(True)
    head = nn.Linear(lin.num_features, 10)
    y = torch.arange(len(x)) % 10
    boundary_lin, boundary_ft = lin.forward_prefix(x), network.forward_prefix(x)

    def gradfeat() -> None:
        features = torch.cat(lin.features_from_prefix(boundary_lin), dim=1)
        loss = F.cross_entropy(lin.forward_head(features), y)
        loss.backward()

    def finetune() -> None:
        loss = F.cross_entropy(head(network.forward_suffix(boundary_ft)), y)
        loss.backward()

    def timed(step: Any) -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    gradfeat(), finetune()
    ratios = [timed(gradfeat) / timed(finetune) for _ in range(pairs)]
    return statistics.median(ratios)


def check_architecture(
    spec: str, batch_size: int = 2, time_steps: bool = True, **kwargs: Any
) -> CoverageRow:
    """Run every check on one architecture (random weights); errors are recorded.

    Args:
        spec: ``timm:NAME``, ``torchvision:NAME`` or another model spec.
        batch_size: Images per check.
        time_steps: Also measure the step cost against fine-tuning θ2.
        **kwargs: Passed to the model constructor (e.g. ``img_size=64``); the
            checks run at the size the model is built for.
    """
    from .backbones import create_backbone

    row = CoverageRow(spec, kwargs=dict(kwargs))
    try:
        torch.manual_seed(0)
        backbone = create_backbone(spec, weights="random", **kwargs)
        row.input_size = list(backbone.input_size)
        model = jitter_zero_parameters(randomize_batchnorm(backbone.model.float().eval()))
        row.split = list(backbone.split)
        theta2 = [model.get_submodule(n) for n in row.split]
        row.share = sum(_num_params(m) for m in theta2) / max(1, _num_params(model))
        row.real_block = row.share >= MIN_DEFAULT_SHARE and any(
            isinstance(m, WEIGHTED_LAYERS) for t in theta2 for m in t.modules()
        )
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, *backbone.input_size, generator=generator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lin = linearize(model, row.split, input_size=backbone.input_size)
        row.engine = lin.engine
        row.feature_error = lin.check.feature_error
        row.gradient_error = lin.check.gradient_error
        row.cache_ok = cache_error(model, row.split, x, lin.engine) <= CACHE_TOLERANCE
        row.jvp_error = finite_difference_error(model, row.split, x[:1], lin.engine)
        row.ntk_jvp_error = finite_difference_error(
            model, row.split, x[:1], lin.engine, ntk=True
        )
        if time_steps:
            row.step_ratio = step_ratio(model, row.split, x, lin.engine)
    except Exception as exc:  # a failing architecture is a result, not a crash
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return row


__all__ = [
    "CoverageRow",
    "EXACT_TOLERANCE",
    "cache_error",
    "check_architecture",
    "finite_difference_error",
    "jitter_zero_parameters",
    "randomize_batchnorm",
    "step_ratio",
]
