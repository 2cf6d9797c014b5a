"""Families of backbones addressed as ``SOURCE:NAME``: timm, torchvision and the zoo.

Another package adds a family by subclassing :class:`BackboneSource` and registering
the class in the ``gradfeat_plugin.backbone_sources`` entry-point group.
"""

from __future__ import annotations

import contextlib
import difflib
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from ..errors import GradfeatError
from . import _offline


def unknown_name_error(kind: str, name: str, known: list[str]) -> GradfeatError:
    """An error for a name that is not in ``known``, listing the closest ones.

    Args:
        kind: What was looked up, e.g. ``"timm model"``.
        name: The name asked for.
        known: The valid names.
    """
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return GradfeatError(f"unknown {kind} {name!r}{hint} (see list_backbones())")


class BackboneSource(ABC):
    """A family of backbones, each addressed as ``PREFIX:NAME``.

    Subclasses are built without arguments. Models they return are in any mode,
    their ``forward`` returns pooled ``(B, d)`` features, and they may carry timm's
    ``num_features`` and ``pretrained_cfg`` (input size, mean, std) and an optional
    ``gradfeat_split`` naming the default θ2.

    >>> "resnet18" in TorchvisionSource().list_models()
    True
    """

    @abstractmethod
    def list_models(self) -> list[str]:
        """The names this source can build, without the prefix."""

    @abstractmethod
    def create_model(self, name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
        """Build one backbone.

        Args:
            name: A name from :meth:`list_models`.
            pretrained: Load the library's default weights (else random init).
            **kwargs: Passed to the underlying model constructor.

        Raises:
            GradfeatError: Unknown name, or pretrained weights unavailable.
        """


class TimmSource(BackboneSource):
    """``timm:NAME``: ``timm.create_model(NAME, num_classes=0)``; tags such as
    ``resnet18.a1_in1k`` select pretrained weights."""

    def list_models(self) -> list[str]:
        import timm

        return timm.list_models()

    def create_model(self, name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
        import timm

        if not timm.is_model(name):
            raise unknown_name_error("timm model", name, timm.list_models())
        spec = f"timm:{name}"
        if not pretrained:
            return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        cfg = timm.models.get_pretrained_cfg(name)
        hf_hub_id = getattr(cfg, "hf_hub_id", None)
        url = getattr(cfg, "url", None)
        if cfg is None or not (getattr(cfg, "file", None) or hf_hub_id or url):
            raise _offline.offline_error(spec, "timm has no pretrained weights for it")
        cache_only = contextlib.nullcontext()
        offline_reason = ""
        if hf_hub_id and not _offline.online(_offline.hf_hub_endpoint()):
            cache_only = _offline.hf_hub_cache_only()
            offline_reason = (
                "not in the local Hugging Face cache and "
                f"{_offline.hf_hub_endpoint()} is unreachable"
            )
        elif not hf_hub_id and url and not _offline.in_torch_hub_cache(url):
            if not _offline.online(url):
                raise _offline.offline_error(spec, f"{url} is unreachable")
        try:
            with cache_only:
                return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
        except OSError as e:
            reason = offline_reason or f"download failed ({e})"
            raise _offline.offline_error(spec, reason) from e


def _replace_classifier(model: nn.Module) -> None:
    # Every torchvision classifier ends in its last Linear (or, for SqueezeNet,
    # 1x1 Conv2d) module in registration order; without it forward returns the
    # pooled (B, d) features.
    heads = [
        n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    model.set_submodule(heads[-1], nn.Identity())


def _input_size_error(
    model: nn.Module, input_size: tuple[int, int, int], spec: str, exc: BaseException
) -> str:
    """Why ``model`` cannot take images of ``input_size``, naming its first layer
    when the channels differ."""
    size = ",".join(str(n) for n in input_size)
    convs = ((name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d))
    first = next(convs, None)
    if first is not None and first[1].in_channels != input_size[0]:
        name, conv = first
        return (
            f"backbone {spec} takes {conv.in_channels}-channel images (its first "
            f"layer {name} has in_channels={conv.in_channels}), but the input size is "
            f"{size}; pass --input-size "
            f"{conv.in_channels},{input_size[1]},{input_size[2]}"
        )
    why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (
        f"backbone {spec} cannot take inputs of size {size} ({why}); "
        "pass another --input-size"
    )


@torch.no_grad()
def feature_dim(model: nn.Module, input_size: tuple[int, int, int], spec: str) -> int:
    """``d``, from one forward pass of a zero image in eval mode.

    Args:
        model: A backbone returning pooled features.
        input_size: ``(C, H, W)`` of its inputs.
        spec: The model spec, for the error message.

    Raises:
        GradfeatError: The forward does not return a ``(B, d)`` tensor.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, *input_size))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise GradfeatError(_input_size_error(model, input_size, spec, exc)) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise GradfeatError(
            f"backbone {spec} must return pooled (B, d) features, got {got}"
        )
    return int(out.shape[1])


class TorchvisionSource(BackboneSource):
    """``torchvision:NAME``: ``torchvision.models.get_model``, classifier removed.

    Input size, mean and std come from the default weights' transforms when
    pretrained, else ImageNet defaults at 224×224.
    """

    def list_models(self) -> list[str]:
        import torchvision

        return torchvision.models.list_models(module=torchvision.models)

    def create_model(self, name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
        import torchvision
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        known = self.list_models()
        if name not in known:
            raise unknown_name_error("torchvision model", name, known)
        spec = f"torchvision:{name}"
        weights = None
        cfg = {"input_size": (3, 224, 224), "mean": IMAGENET_DEFAULT_MEAN,
               "std": IMAGENET_DEFAULT_STD}
        if pretrained:
            weights = torchvision.models.get_model_weights(name).DEFAULT
            if not _offline.in_torch_hub_cache(weights.url) and not _offline.online(
                weights.url
            ):
                raise _offline.offline_error(spec, f"{weights.url} is unreachable")
            transform = weights.transforms()
            crop = transform.crop_size[0]
            cfg = {"input_size": (3, crop, crop), "mean": tuple(transform.mean),
                   "std": tuple(transform.std),
                   "crop_pct": crop / transform.resize_size[0]}
        try:
            model = torchvision.models.get_model(name, weights=weights, **kwargs)
        except OSError as e:
            raise _offline.offline_error(spec, f"download failed ({e})") from e
        _replace_classifier(model)
        model.pretrained_cfg = cfg
        model.num_features = feature_dim(model, cfg["input_size"], spec)
        return model


class ZooSource(BackboneSource):
    """``zoo:NAME``: the models this project pretrains itself (``gradfeat_plugin.zoo``).

    ``pretrained`` loads them from the zoo's cache, pretraining on first use.
    """

    @staticmethod
    def _zoo() -> Any:
        try:
            from .. import zoo
        except ImportError as e:
            raise GradfeatError(f"the model zoo failed to import ({e})") from e
        if not hasattr(zoo, "zoo_model") or not hasattr(zoo, "list_zoo_models"):
            raise GradfeatError(
                "the model zoo (gradfeat_plugin.zoo) provides no models in this "
                "installation; use a timm: or torchvision: backbone"
            )
        return zoo

    def list_models(self) -> list[str]:
        return list(self._zoo().list_zoo_models())

    def create_model(self, name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
        zoo = self._zoo()
        known = list(zoo.list_zoo_models())
        if name not in known:
            raise unknown_name_error("zoo model", name, known)
        return zoo.zoo_model(name, pretrained=pretrained, **kwargs)
