"""Which checkpoint tensors are the backbone's: prefixes, ``--weights-key``, layouts.

Checkpoints nest the backbone under a wrapper's attribute names (``module.``,
``backbone.``, ``model.backbone.``, ``student_backbone.``, ...), and lightly's
examples build it as ``nn.Sequential(*list(resnet.children())[:-1])``, whose keys
(``0.weight``, ``4.0.conv1.weight``) name the same tensors by position.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping

import torch

from ..errors import GradfeatError

# Wrappers whose attribute names prefix the backbone's keys: DDP (``module.``),
# lightly/Lightning modules (``backbone.``, ``model.``) and encoders of SSL methods.
REMAPPED_PREFIXES = ("module.", "backbone.", "model.", "encoder.")

Tensors = Mapping[str, torch.Tensor]


@dataclass
class Selection:
    """The checkpoint tensors chosen for the model.

    Args:
        prefix: The stripped key prefix (``""`` for none).
        tensors: Model key -> tensor.
        layout: ``names`` (keys match after the prefix) or ``order`` (a Sequential
            of the model's children: same tensors in the same order and shapes).
        source_keys: Model key -> the checkpoint key it came from.
    """

    prefix: str
    tensors: dict[str, torch.Tensor]
    layout: str
    source_keys: dict[str, str]


def is_wrapper_chain(prefix: str) -> bool:
    """Whether ``prefix`` is a chain of :data:`REMAPPED_PREFIXES`, e.g. ``module.backbone.``."""
    rest = prefix
    while rest:
        head = next((p for p in REMAPPED_PREFIXES if rest.startswith(p)), None)
        if head is None:
            return False
        rest = rest[len(head):]
    return True


def key_prefixes(keys: list[str]) -> set[str]:
    """Every prefix of the keys that ends at a dot, and ``""``."""
    prefixes = {""}
    for key in keys:
        parts = key.split(".")[:-1]
        for end in range(1, len(parts) + 1):
            prefixes.add(".".join(parts[:end]) + ".")
    return prefixes


def by_names(state_dict: Tensors, model_keys: set[str], prefix: str) -> dict[str, str]:
    """Model key -> checkpoint key for keys equal after stripping ``prefix``."""
    return {
        k[len(prefix):]: k
        for k in state_dict
        if k.startswith(prefix) and k[len(prefix):] in model_keys
    }


def by_order(
    state_dict: Tensors, target: Tensors, prefix: str
) -> dict[str, str] | None:
    """Model key -> checkpoint key when the tensors under ``prefix`` are the model's
    in the same order, with the same shapes and last name component (``weight``,
    ``running_mean``, ...); ``None`` otherwise."""
    source = [k for k in state_dict if k.startswith(prefix)]
    for skip_counters in (False, True):
        names = list(target)
        keys = source
        if skip_counters:
            names = [n for n in names if not n.endswith("num_batches_tracked")]
            keys = [k for k in keys if not k.endswith("num_batches_tracked")]
        if len(keys) != len(names) or not names:
            continue
        if all(
            k.rsplit(".", 1)[-1] == n.rsplit(".", 1)[-1]
            and state_dict[k].shape == target[n].shape
            for k, n in zip(keys, names)
        ):
            return dict(zip(names, keys))
    return None


def describe_prefixes(keys: list[str], limit: int = 6) -> str:
    """The checkpoint's top-level key groups with their sizes, for error messages."""
    depth = 1
    groups: Counter[str] = Counter()
    while depth <= 3:
        groups = Counter(
            ".".join(k.split(".")[:depth]) + ("." if k.count(".") >= depth else "")
            for k in keys
        )
        if len(groups) > 1 or depth == 3:
            break
        depth += 1
    shown = [f"{p} ({n})" for p, n in groups.most_common(limit)]
    more = f", ... ({len(groups) - limit} more)" if len(groups) > limit else ""
    return ", ".join(shown) + more


def _choose(candidates: list[str], path: str) -> str:
    """One prefix among equally good ones (full prefixes, as in the checkpoint).

    The only wrapper chain wins over copies kept beside it (``backbone.`` over
    ``backbone_momentum.``); several chains (``backbone.`` and ``model.backbone.``),
    or several prefixes none of which is a chain (DINO's ``student_backbone.`` and
    ``teacher_backbone.``), are ambiguous.
    """
    chains = [p for p in candidates if is_wrapper_chain(p)]
    if len(chains) == 1:
        return chains[0]
    if len(candidates) == 1:
        return candidates[0]
    tied = sorted(chains or candidates)
    raise GradfeatError(
        f"checkpoint {path} holds several backbones ({', '.join(tied)}); pick one with "
        f"--weights-key PREFIX (MODEL.WEIGHTS_KEY), e.g. --weights-key "
        f"{tied[0].rstrip('.')}"
    )


def select_tensors(
    state_dict: Tensors,
    target: Tensors,
    path: str,
    weights_key: str = "",
    model_name: str = "the model",
) -> Selection:
    """Find the backbone's tensors in a checkpoint.

    With ``weights_key`` only keys under that prefix are considered. Keys are then
    matched by name after stripping the prefix that fits the most model keys; when
    no prefix fits every model key, a prefix under which the tensors follow the
    model's order and shapes (a Sequential of its children) is used instead.

    Args:
        state_dict: Checkpoint tensors.
        target: The model's ``state_dict``.
        path: The checkpoint, for messages.
        weights_key: A key prefix such as ``student_backbone`` (``""``: search).
        model_name: The model's class name, for messages.

    Raises:
        GradfeatError: Nothing fits (the message lists the prefixes found and the
            flag), or several backbones fit equally well and none is chosen.
    """
    forced = weights_key.strip(".")
    forced = forced + "." if forced else ""
    if forced and not any(k.startswith(forced) for k in state_dict):
        raise GradfeatError(
            f"no key of checkpoint {path} starts with {forced!r}; its keys start "
            f"with {describe_prefixes(list(state_dict))}; pass one of these to "
            "--weights-key"
        )
    keys = [k for k in state_dict if k.startswith(forced)]
    prefixes = [p for p in key_prefixes([k[len(forced):] for k in keys])]
    model_keys = set(target)
    fits = {p: by_names(state_dict, model_keys, forced + p) for p in prefixes}
    best = max(len(f) for f in fits.values())
    if best < len(target):
        ordered = {
            p: m for p in prefixes
            if (m := by_order(state_dict, target, forced + p)) is not None
        }
        if ordered:
            prefix = _choose([forced + p for p in ordered], path)
            mapping = ordered[prefix[len(forced):]]
            return Selection(
                prefix, {n: state_dict[k] for n, k in mapping.items()}, "order", mapping
            )
    if best == 0:
        raise GradfeatError(
            f"no tensor in checkpoint {path} fits {model_name}: the checkpoint's keys "
            f"start with {describe_prefixes(keys)}, the model's with "
            f"{describe_prefixes(list(target))}; pick the backbone's prefix with "
            "--weights-key PREFIX, or check the --model spec"
        )
    prefix = _choose([forced + p for p, f in fits.items() if len(f) == best], path)
    mapping = fits[prefix[len(forced):]]
    return Selection(
        prefix, {n: state_dict[k] for n, k in mapping.items()}, "names", mapping
    )
