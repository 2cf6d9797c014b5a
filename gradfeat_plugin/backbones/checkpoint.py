"""Checkpoint loading: ``weights_only`` unpickling, prefix remapping, key reports."""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import logging
import os
import pathlib
import pickle
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import unquote, urlparse

import torch
from iopath.common.download import download
from iopath.common.file_io import HTTPURLHandler, PathManager, get_cache_dir
from torch import nn

from ..errors import GradfeatError
from . import _offline
from ._layouts import (
    by_names,
    is_wrapper_chain,
    key_prefixes,
    select_tensors,
)
from ._shapes import mismatch_message, shape_mismatches

# Plain types that Lightning checkpoints keep in their hyperparameters
# (``save_hyperparameters(args)`` stores an argparse Namespace). Only these are
# allowed besides tensors and containers; any other global is refused.
HYPERPARAMETER_TYPES = (
    argparse.Namespace,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
)
# Dict keys under which Lightning, timm and most training scripts nest the weights.
NESTED_STATE_DICT_KEYS = ("state_dict", "model")
_URL_SCHEMES = ("http", "https", "ftp")
# Buffers that checkpoints of older libraries often lack and that change no output.
_IGNORED_MISSING_SUFFIXES = (".num_batches_tracked",)
#: Missing names shown in the error for a partial checkpoint.
SHOWN_MISSING = 5
#: Parts of self-supervised training modules that are not the backbone: heads,
#: momentum / EMA / teacher copies, queues, prototypes, losses with state. A key
#: with a component that matches one of these patterns is left out on purpose.
SSL_PARTS = (
    "projection_head*", "prediction_head*", "student_head*", "teacher_head*",
    "*momentum*", "teacher*", "student*", "ema", "ema_*", "*_ema", "queue*",
    "prototypes", "criterion", "memory_bank", "decoder*",
)

log = logging.getLogger(__name__)

path_manager = PathManager()
path_manager.register_handler(HTTPURLHandler())


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did.

    Args:
        path: The checkpoint's path or URL.
        prefix: The key prefix that was stripped (``""`` for none).
        loaded: Model keys that received a tensor.
        missing: Model keys the checkpoint lacks (left as they were).
        unexpected: Checkpoint keys that fit no model key (ignored).
        layout: ``names`` (keys matched by name) or ``order`` (by order and shape).
        left_out: Parts of a self-supervised module that are not the backbone
            (:data:`SSL_PARTS`), by key group (``projection_head.``,
            ``backbone_momentum.``) with their tensor counts; their keys are among
            ``unexpected``.
    """

    path: str
    prefix: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    layout: str = "names"
    left_out: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many tensors came from which prefix, and the groups of
        known self-supervised parts that were left out.

        >>> report = LoadReport("a.pt", "backbone.", ["w"], left_out={"prototypes.": 1})
        >>> print(report.summary().replace("; ", ";\\n"))
        checkpoint a.pt: 1 tensors loaded from backbone.*;
        left out on purpose: prototypes.* (1)
        """
        where = f"{self.prefix}*" if self.prefix else "the top level"
        line = f"checkpoint {self.path}: {len(self.loaded)} tensors loaded from {where}"
        if self.layout == "order":
            line += " (matched by order and shape)"
        if self.left_out:
            groups = ", ".join(f"{g}* ({n})" for g, n in sorted(self.left_out.items()))
            line += f"; left out on purpose: {groups}"
        return line

    @property
    def partial(self) -> bool:
        """Whether some model tensors kept their previous values."""
        return bool(_unloaded(self.missing))


def ssl_part(key: str) -> str | None:
    """The group of a key that belongs to a known self-supervised part, up to that
    part (``model.projection_head.`` for ``model.projection_head.layers.0.weight``),
    else ``None``."""
    parts = key.split(".")[:-1]
    for end, part in enumerate(parts, 1):
        if any(fnmatch.fnmatchcase(part, pattern) for pattern in SSL_PARTS):
            return ".".join(parts[:end]) + "."
    return None


def _unloaded(missing: list[str]) -> list[str]:
    return [k for k in missing if not k.endswith(_IGNORED_MISSING_SUFFIXES)]


def _is_url(path: str) -> bool:
    return urlparse(path).scheme in _URL_SCHEMES


def url_cache_path(url: str) -> str:
    """Where a checkpoint URL is cached: a folder named by the SHA-256 of the whole URL.

    Two servers, ports or queries never share a cached file, and the file name
    (the URL's last segment, reduced to safe characters) cannot leave the folder.

    Args:
        url: An http(s)/ftp URL.

    Raises:
        GradfeatError: The URL's path has ``..`` segments.
    """
    segments = unquote(urlparse(url).path).replace("\\", "/").split("/")
    if ".." in segments:
        raise GradfeatError(
            f"refusing checkpoint URL {url}: its path has '..' segments"
        )
    name = re.sub(r"[^A-Za-z0-9._-]", "_", segments[-1]).lstrip(".") or "checkpoint"
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
    return os.path.join(get_cache_dir(), "gradfeat_plugin", "checkpoints", digest, name)


def _local_copy(path_or_url: str) -> str:
    if _is_url(path_or_url):
        cached = url_cache_path(path_or_url)
        if os.path.isfile(cached):
            return cached
        if not _offline.host_reachable(path_or_url):
            raise GradfeatError(
                f"cannot download checkpoint {path_or_url}: host unreachable; "
                "download it elsewhere and pass --weights PATH"
            )
        try:
            return download(
                path_or_url, os.path.dirname(cached),
                filename=os.path.basename(cached), progress=False,
            )
        except (OSError, ValueError) as e:
            raise GradfeatError(
                f"cannot download checkpoint {path_or_url} ({e}); "
                "download it elsewhere and pass --weights PATH"
            ) from e
    local = path_manager.get_local_path(path_or_url)
    if not os.path.isfile(local):
        raise GradfeatError(
            f"checkpoint not found: {path_or_url}; pass an existing file or URL with "
            "--weights, or --weights random / --weights pretrained"
        )
    return local


def read_state_dict(path_or_url: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unpickled with ``weights_only=True``.

    Nested ``state_dict`` / ``model`` entries (Lightning, timm) are unwrapped;
    non-tensor entries are dropped. Besides tensors and containers, only the plain
    types of :data:`HYPERPARAMETER_TYPES` (a Lightning checkpoint's saved
    ``argparse.Namespace``) may appear.

    Args:
        path_or_url: A local path or an http(s)/ftp URL (cached by iopath).

    Raises:
        GradfeatError: Missing, unreadable, corrupt or truncated file, or a pickle
            that would run code (it is refused before any code runs).
    """
    local = _local_copy(path_or_url)
    try:
        with path_manager.open(local, "rb") as f, torch.serialization.safe_globals(
            list(HYPERPARAMETER_TYPES)
        ):
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only names the blocked callable as a GLOBAL; other unpickling
        # errors mean the bytes are not a valid pickle.
        if re.search(r"\bglobal\b", str(e), re.IGNORECASE):
            raise GradfeatError(
                f"refusing checkpoint {path_or_url}: its pickle references code "
                "outside plain tensors and containers, which could run on loading; "
                "re-save it as a plain state_dict of tensors"
            ) from e
        raise _corrupt(path_or_url, e) from e
    # Damaged bytes surface as many exception types (zip, struct, EOF, unicode).
    except Exception as e:
        raise _corrupt(path_or_url, e) from e
    return _unwrap(obj, path_or_url)


def _corrupt(path_or_url: str, error: Exception) -> GradfeatError:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return GradfeatError(
        f"checkpoint {path_or_url} is corrupt or truncated ({first_line}); "
        "re-download or re-save it"
    )


def _unwrap(obj: Any, path_or_url: str) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping):
        nested = next(
            (obj[k] for k in NESTED_STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)),
            None,
        )
        if nested is None:
            break
        obj = nested
    if not isinstance(obj, Mapping):
        raise GradfeatError(
            f"checkpoint {path_or_url} holds a {type(obj).__name__}, not a state_dict; "
            "save model.state_dict() instead"
        )
    tensors = {
        k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)
    }
    if not tensors:
        raise GradfeatError(f"checkpoint {path_or_url} contains no tensors")
    return tensors


def remap_state_dict(
    state_dict: Mapping[str, torch.Tensor], model_keys: set[str]
) -> tuple[str, dict[str, torch.Tensor]]:
    """Strip the wrapper prefix that makes the most checkpoint keys fit the model.

    Prefixes are chains of ``module.``, ``backbone.``, ``model.``, ``encoder.``
    (e.g. ``module.backbone.``); keys without the chosen prefix are dropped.

    Args:
        state_dict: Checkpoint tensors.
        model_keys: The keys of the target model's ``state_dict``.

    Returns:
        The stripped prefix and the remapped tensors whose keys the model has.

    >>> import torch
    >>> remap_state_dict({"module.fc.weight": torch.ones(1)}, {"fc.weight"})[0]
    'module.'
    """
    candidates = [p for p in key_prefixes(list(state_dict)) if is_wrapper_chain(p)]

    def fitting(prefix: str) -> dict[str, torch.Tensor]:
        return {m: state_dict[k] for m, k in by_names(state_dict, model_keys, prefix).items()}

    best = max(sorted(candidates, key=len), key=lambda p: len(fitting(p)))
    return best, fitting(best)


def load_checkpoint(
    model: nn.Module, path_or_url: str, allow_partial: bool = False,
    weights_key: str = "",
) -> LoadReport:
    """Load a checkpoint from lightly, Lightning, DDP, timm or a plain state_dict.

    The file is read through iopath (URLs are cached under a digest of the whole
    URL, see :func:`url_cache_path`) and unpickled with
    ``torch.load(..., weights_only=True)``. The backbone's tensors are found under
    the prefix that fits the model best (``module.``, ``backbone.``,
    ``model.backbone.``, ...; ``weights_key`` picks one, e.g. ``teacher_backbone``),
    matched by name or, for a ``Sequential`` of the model's children as lightly's
    examples build it, by order and shape. A checkpoint that leaves model tensors
    unloaded is an error unless ``allow_partial``; missing keys that are allowed,
    and unexpected keys other than the known parts of self-supervised modules
    (heads, momentum and teacher copies: :data:`SSL_PARTS`), are warned about. One
    info line (:meth:`LoadReport.summary`) says which prefix gave how many tensors
    and which of those known parts were left out.

    Args:
        model: The backbone to load into (in place).
        path_or_url: A local path or URL.
        allow_partial: Accept a checkpoint that lacks some of the model's tensors
            (they keep their current values).
        weights_key: Key prefix of the backbone inside the checkpoint (``""``: the
            one that fits).

    Returns:
        A :class:`LoadReport`.

    Raises:
        GradfeatError: Unreadable, unsafe or corrupt file, no key fits the model,
            a tensor's shape differs from the model's, or tensors are missing and
            ``allow_partial`` is off.
    """
    state_dict = read_state_dict(path_or_url)
    target = model.state_dict()
    selection = select_tensors(
        state_dict, target, path_or_url, weights_key, type(model).__name__
    )
    prefix, remapped = selection.prefix, selection.tensors
    mismatches = shape_mismatches(remapped, target)
    if mismatches:
        raise GradfeatError(mismatch_message(path_or_url, mismatches, remapped, model))
    unloaded = _unloaded(sorted(set(target) - set(remapped)))
    if unloaded and not allow_partial:
        raise GradfeatError(
            f"checkpoint {path_or_url} loads {len(remapped)} of {len(target)} "
            f"tensors of {type(model).__name__}; {len(unloaded)} missing, first: "
            f"{', '.join(unloaded[:SHOWN_MISSING])}; check the --model spec, or "
            "pass --allow-partial-weights to keep the rest as initialised"
        )
    model.load_state_dict(remapped, strict=False)
    unexpected = sorted(set(state_dict) - set(selection.source_keys.values()))
    left_out: dict[str, int] = {}
    unknown = []
    for key in unexpected:
        group = ssl_part(key)
        if group is None:
            unknown.append(key)
        else:
            left_out[group] = left_out.get(group, 0) + 1
    report = LoadReport(
        path=path_or_url,
        prefix=prefix,
        loaded=sorted(remapped),
        missing=sorted(set(target) - set(remapped)),
        unexpected=unexpected,
        layout=selection.layout,
        left_out=left_out,
    )
    log.info("%s", report.summary())
    if report.missing or unknown:
        warnings.warn(
            f"checkpoint {path_or_url}: {len(report.missing)} missing keys "
            f"{report.missing[:5]}, {len(unknown)} unexpected keys {unknown[:5]}",
            stacklevel=2,
        )
    return report
