"""Checkpoint tensors whose shapes differ from the model's, and the arguments that
would build a model they fit (``--model-kwargs img_size=... patch_size=...``,
``in_chans=...``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

#: Mismatched tensors named in the error before the rest are counted.
SHOWN_MISMATCHES = 3


@dataclass
class Mismatch:
    """One tensor of different shape.

    Args:
        key: The model's key.
        checkpoint: Its shape in the checkpoint.
        model: Its shape in the model.
    """

    key: str
    checkpoint: tuple[int, ...]
    model: tuple[int, ...]

    def __str__(self) -> str:
        return (
            f"{self.key} has shape {self.checkpoint} in the checkpoint, "
            f"{self.model} in the model"
        )


def shape_mismatches(
    tensors: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> list[Mismatch]:
    """The tensors of ``tensors`` (model key -> tensor) whose shape is not the
    model's, in the model's order."""
    return [
        Mismatch(key, tuple(tensors[key].shape), tuple(value.shape))
        for key, value in target.items()
        if key in tensors and tensors[key].shape != value.shape
    ]


def _owner(model: nn.Module, key: str) -> tuple[str, nn.Module | None]:
    """The key's module path (``""`` for the root, else ending in ``.``) and module."""
    path = key.rpartition(".")[0]
    try:
        return (path + "." if path else ""), model.get_submodule(path)
    except AttributeError:
        return (path + "." if path else ""), None


def _prefix_tokens(module: nn.Module | None) -> int:
    """Tokens a ViT's ``pos_embed`` holds besides the patches (class, distillation)."""
    if module is None:
        return 1
    if getattr(module, "no_embed_class", False):
        return 0
    count = getattr(module, "num_prefix_tokens", None)
    if isinstance(count, int):
        return count
    return int(getattr(module, "cls_token", None) is not None)


def _patch_size(
    tensors: Mapping[str, torch.Tensor], owner_path: str, owner: nn.Module | None
) -> int | None:
    """The checkpoint's patch size (its patch embedding's kernel), else the model's."""
    weight = tensors.get(f"{owner_path}patch_embed.proj.weight")
    if weight is not None and weight.dim() == 4 and weight.shape[2] == weight.shape[3]:
        return int(weight.shape[2])
    size = getattr(getattr(owner, "patch_embed", None), "patch_size", None)
    if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    return None


def _first_conv(target: Mapping[str, torch.Tensor]) -> str | None:
    return next((k for k, v in target.items() if v.dim() == 4), None)


def suggested_kwargs(
    mismatches: list[Mismatch],
    tensors: Mapping[str, torch.Tensor],
    model: nn.Module,
) -> dict[str, Any]:
    """Constructor keywords under which the checkpoint's shapes would fit.

    A position embedding of ``N`` tokens with ``k`` prefix tokens covers a square
    grid of ``g = sqrt(N - k)`` patches, so the model was built for
    ``img_size = g * patch_size``; a patch embedding's kernel is its
    ``patch_size``; a first convolution's input channels are ``in_chans``.

    Args:
        mismatches: From :func:`shape_mismatches`.
        tensors: The checkpoint's tensors by model key.
        model: The model they were to be loaded into.

    Returns:
        ``{}`` when no mismatch is one of these.
    """
    kwargs: dict[str, Any] = {}
    first_conv = _first_conv(model.state_dict())
    for m in mismatches:
        owner_path, owner = _owner(model, m.key)
        leaf = m.key.rpartition(".")[2]
        if leaf == "pos_embed" and len(m.checkpoint) == 3:
            patches = m.checkpoint[1] - _prefix_tokens(owner)
            grid = math.isqrt(max(patches, 0))
            patch = _patch_size(tensors, owner_path, owner)
            if grid and grid * grid == patches and patch:
                kwargs.setdefault("img_size", grid * patch)
                kwargs.setdefault("patch_size", patch)
        elif m.key.endswith("patch_embed.proj.weight") and len(m.checkpoint) == 4:
            if m.checkpoint[2:] != m.model[2:] and m.checkpoint[2] == m.checkpoint[3]:
                kwargs.setdefault("patch_size", m.checkpoint[2])
            if m.checkpoint[1] != m.model[1]:
                kwargs.setdefault("in_chans", m.checkpoint[1])
        elif m.key == first_conv and len(m.checkpoint) == 4:
            others = (m.checkpoint[0], *m.checkpoint[2:]) == (m.model[0], *m.model[2:])
            if m.checkpoint[1] != m.model[1] and others:
                kwargs.setdefault("in_chans", m.checkpoint[1])
    return kwargs


def mismatch_message(
    path: str,
    mismatches: list[Mismatch],
    tensors: Mapping[str, torch.Tensor],
    model: nn.Module,
) -> str:
    """The one-line error for a checkpoint whose shapes do not fit ``model``: the
    first mismatched tensors and the ``--model-kwargs`` that would fit them."""
    shown = "; ".join(str(m) for m in mismatches[:SHOWN_MISMATCHES])
    more = len(mismatches) - SHOWN_MISMATCHES
    rest = f" (+{more} more)" if more > 0 else ""
    kwargs = suggested_kwargs(mismatches, tensors, model)
    if not kwargs:
        hint = "check the --model spec and --model-kwargs"
    else:
        given = " ".join(f"{k}={v}" for k, v in kwargs.items())
        hint = (
            "it was saved from a model built with other arguments: pass "
            f"--model-kwargs {given}"
        )
        if "in_chans" in kwargs:
            size = tuple(dict(getattr(model, "pretrained_cfg", None) or {}).get(
                "input_size", (0, 0, 0)))
            sides = f"{size[1]},{size[2]}" if len(size) == 3 and size[1] else "H,W"
            hint += f" and --input-size {kwargs['in_chans']},{sides}"
    return (
        f"checkpoint {path} does not fit the model: {len(mismatches)} tensor(s) differ "
        f"in shape, first: {shown}{rest}; {hint}"
    )
