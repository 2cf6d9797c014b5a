"""NTK parametrisation: of θ2, as a per-parameter rescaling of the tangent w2, and
of a linear head (:class:`NTKLinear`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

BIAS_SCALE = math.sqrt(0.1)


def ntk_scales(model: nn.Module, names: list[str]) -> dict[str, float]:
    """Scale applied to each tangent so that ``J·(c ⊙ w2)`` is the NTK-parametrised JVP.

    In the paper's reference code a layer's weight is ``W = c·V`` with
    ``c = sqrt(1/out_channels)`` (``out_features`` for a Linear) and its bias
    ``b = sqrt(0.1)·v``; w2 lives in the ``(V, v)`` coordinates, so the tangent of
    ``W`` is ``c·w2``. Other parameters (norm scales, tokens) keep scale 1.

    Args:
        model: The (folded) backbone.
        names: Parameter names of θ2.

    Returns:
        A mapping from parameter name to its scale.
    """
    scales = {}
    for name in names:
        owner_name, _, leaf = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        if leaf == "bias":
            scales[name] = BIAS_SCALE
        elif leaf == "weight" and isinstance(owner, nn.modules.conv._ConvNd):
            scales[name] = math.sqrt(1.0 / owner.out_channels)
        elif leaf == "weight" and isinstance(owner, nn.Linear):
            scales[name] = math.sqrt(1.0 / owner.out_features)
        else:
            scales[name] = 1.0
    return scales


def _exact_preimage(effective: Tensor, scale: float) -> Tensor:
    """``raw`` with ``raw * scale == effective`` bit for bit, when such a value exists
    (it does for anything a head computed as ``raw * scale``); else the nearest."""
    raw = effective / scale
    for _ in range(2):
        low = raw * scale < effective
        high = raw * scale > effective
        if not (low.any() or high.any()):
            break
        raw = torch.where(low, torch.nextafter(raw, raw.new_tensor(math.inf)), raw)
        raw = torch.where(high, torch.nextafter(raw, raw.new_tensor(-math.inf)), raw)
    return raw


class NTKLinear(nn.Linear):
    """A linear head in the NTK parametrisation of the paper's reference code.

    ``y = √(1/out_features)·W x + √0.1·b``: the same functions as ``nn.Linear``
    (whose weight is the *effective* ``√(1/out_features)·W``), but gradient steps
    are taken in ``(W, b)``. It starts as ``nn.Linear`` does (the same effective
    weights), so only the steps differ.

    >>> head = NTKLinear(64, 10)
    >>> x = torch.randn(2, 64)
    >>> plain = nn.Linear(64, 10)
    >>> weight, bias = head.effective_weight(), head.effective_bias()
    >>> plain.load_state_dict({"weight": weight, "bias": bias})
    <All keys matched successfully>
    >>> torch.equal(plain(x), head(x))
    True
    """

    bias_scale = BIAS_SCALE

    @property
    def weight_scale(self) -> float:
        """``√(1/out_features)``."""
        return math.sqrt(1.0 / self.out_features)

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation of the effective weight and bias."""
        super().reset_parameters()
        with torch.no_grad():
            self.weight.div_(self.weight_scale)
            if self.bias is not None:
                self.bias.div_(self.bias_scale)

    def effective_weight(self) -> Tensor:
        """``√(1/out_features)·W``: the weight of the same function as a plain head."""
        return self.weight * self.weight_scale

    def effective_bias(self) -> Tensor | None:
        """``√0.1·b``, or ``None`` without a bias."""
        return None if self.bias is None else self.bias * self.bias_scale

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.effective_bias())

    @torch.no_grad()
    def set_effective(self, weight: Tensor, bias: Tensor | None = None) -> None:
        """Set ``(W, b)`` so that the layer computes ``weight·x + bias`` (``bias``
        zero when omitted). An effective weight read from another ``NTKLinear`` of
        the same shape is reproduced exactly."""
        self.weight.copy_(_exact_preimage(weight.to(self.weight), self.weight_scale))
        if self.bias is not None:
            bias = torch.zeros_like(self.bias) if bias is None else bias.to(self.bias)
            self.bias.copy_(_exact_preimage(bias, self.bias_scale))


def effective_parameters(head: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """``(weight, bias)`` of the function a linear head computes (``NTKLinear``'s
    effective ones, an ``nn.Linear``'s own)."""
    if isinstance(head, NTKLinear):
        return head.effective_weight(), head.effective_bias()
    return head.weight, head.bias


@torch.no_grad()
def set_effective_parameters(
    head: nn.Linear, weight: Tensor, bias: Tensor | None = None
) -> None:
    """Make a linear head compute ``weight·x + bias`` (``bias`` zero when omitted)."""
    if isinstance(head, NTKLinear):
        head.set_effective(weight, bias)
        return
    head.weight.copy_(weight)
    if head.bias is not None:
        head.bias.copy_(bias if bias is not None else torch.zeros_like(head.bias))
