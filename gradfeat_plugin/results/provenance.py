"""What every stored number carries so it can be reproduced and compared: package
versions, the config's hash, and the model's FLOPs and parameter counts."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import logging
import platform
import warnings
from collections.abc import Sequence

import torch
from torch import nn

#: Distributions whose versions are stored with every run.
VERSIONED_PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "lightly",
    "pytorch-lightning",
    "fvcore",
    "gradfeat-plugin",
)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that decide a result (``None`` if missing),
    plus the Python version.

    >>> package_versions()["torch"]  # doctest: +SKIP
    '2.4.0'
    """
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def config_hash(cfg_text: str) -> str:
    """The SHA-256 hex digest of a config's YAML text: equal hashes, equal configs.

    Args:
        cfg_text: The merged config as dumped YAML (``cfg.dump()``).
    """
    return hashlib.sha256(cfg_text.encode("utf-8")).hexdigest()


def count_flops(model: nn.Module, input_size: Sequence[int]) -> tuple[int, int]:
    """FLOPs of one forward pass on one input, and the parameter count, by fvcore.

    fvcore counts one fused multiply-add as one flop. Its warnings about operators it
    does not count are silenced; a model fvcore cannot trace gets 0 flops (the
    parameter count is still exact). The model is run in eval mode without autograd
    on a zero input on its own device and dtype, and its training mode is restored.

    Args:
        model: The network to count.
        input_size: One input's shape without the batch dimension, e.g. ``(3, 224,
            224)`` as in timm's ``pretrained_cfg["input_size"]``.

    Returns:
        ``(flops, params)``.

    >>> count_flops(nn.Conv2d(3, 8, 3, padding=1), (3, 8, 8))
    (13824, 224)
    """
    with _quiet():
        # Imported here: importing fvcore.nn warns about torch.jit.script.
        from fvcore.nn import FlopCountAnalysis, parameter_count

    params = int(parameter_count(model)[""])
    reference = next(model.parameters(), None)
    example = torch.zeros(
        1,
        *input_size,
        device=reference.device if reference is not None else None,
        dtype=reference.dtype if reference is not None else None,
    )
    was_training = model.training
    model.eval()
    try:
        with _quiet(), torch.no_grad():
            analysis = FlopCountAnalysis(model, example)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            flops = int(analysis.total())
    except Exception:  # noqa: BLE001 - an untraceable model is reported as 0 flops
        flops = 0
    finally:
        model.train(was_training)
    return flops, params


@contextlib.contextmanager
def _quiet():
    """Silence the tracer's Python warnings and fvcore's logged ones."""
    fvcore_logger = logging.getLogger("fvcore")
    level = fvcore_logger.level
    fvcore_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        fvcore_logger.setLevel(level)
