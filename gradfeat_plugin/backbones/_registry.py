"""Where names resolve: in-process registrations, entry points and sources."""

from __future__ import annotations

import fnmatch
import functools
import importlib.metadata
import warnings
from typing import Any, Callable

from torch import nn

from ..errors import GradfeatError
from .sources import (
    BackboneSource,
    TimmSource,
    TorchvisionSource,
    ZooSource,
    unknown_name_error,
)

BACKBONE_GROUP = "gradfeat_plugin.backbones"
SOURCE_GROUP = "gradfeat_plugin.backbone_sources"

BackboneFactory = Callable[..., nn.Module]

# The plugin's own sources. setup.py registers the same classes in SOURCE_GROUP;
# they are also known here so that a stale or missing install keeps them working.
BUILTIN_SOURCES: dict[str, type[BackboneSource]] = {
    "timm": TimmSource,
    "torchvision": TorchvisionSource,
    "zoo": ZooSource,
}

_registered: dict[str, BackboneFactory] = {}


@functools.lru_cache(maxsize=None)
def _entry_points(group: str) -> dict[str, tuple[importlib.metadata.EntryPoint, ...]]:
    # Names map to every distinct target registered under them (a duplicate name
    # from two packages keeps both, to be reported when the name is used).
    table: dict[str, tuple[importlib.metadata.EntryPoint, ...]] = {}
    for ep in importlib.metadata.entry_points(group=group):
        known = table.get(ep.name, ())
        if all(ep.value != other.value for other in known):
            table[ep.name] = known + (ep,)
    return table


def refresh_entry_points() -> None:
    """Forget the cached entry-point tables (after installing a package at runtime)."""
    _entry_points.cache_clear()


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else ep.value


def _load(kind: str, name: str, eps: tuple[importlib.metadata.EntryPoint, ...]) -> Any:
    if len(eps) > 1:
        owners = ", ".join(f"{_dist_name(ep)} ({ep.value})" for ep in eps)
        raise GradfeatError(
            f"{kind} {name!r} is registered more than once: {owners}; "
            "uninstall all but one of these packages"
        )
    ep = eps[0]
    try:
        return ep.load()
    # A plugin may fail to import with any exception; it must not take down others.
    except Exception as e:
        raise GradfeatError(
            f"plugin {_dist_name(ep)} failed to load {kind} {name!r} from {ep.value} "
            f"({type(e).__name__}: {e}); fix or uninstall {_dist_name(ep)}"
        ) from e


def register_backbone(name: str, factory: BackboneFactory) -> None:
    """Register a backbone factory under ``name`` for this process.

    Args:
        name: The model spec users will type; must not contain ``:`` (reserved for
            sources) nor be taken by another registration or entry point.
        factory: ``f(pretrained: bool = True, **kw) -> nn.Module`` whose forward
            returns pooled ``(B, d)`` features.

    Raises:
        GradfeatError: The name is taken or malformed.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> def my_encoder(pretrained: bool = True, **kw) -> BiGANEncoder:
    ...     return BiGANEncoder(**kw)
    >>> register_backbone("my_encoder", my_encoder)
    """
    if not name or ":" in name:
        raise GradfeatError(f"backbone name {name!r} must be non-empty and without ':'")
    if not callable(factory):
        raise GradfeatError(f"backbone factory for {name!r} is not callable")
    if name in _registered or name in _entry_points(BACKBONE_GROUP):
        raise GradfeatError(
            f"backbone {name!r} is already registered; pick another name"
        )
    _registered[name] = factory


def get_factory(name: str) -> BackboneFactory:
    """The factory registered (in process or as an entry point) under ``name``.

    Args:
        name: A backbone name without a source prefix.

    Raises:
        GradfeatError: Unknown, duplicated, or its plugin fails to import.
    """
    eps = _entry_points(BACKBONE_GROUP).get(name, ())
    if name in _registered:
        if eps:
            raise GradfeatError(
                f"backbone {name!r} is registered both in process and by "
                f"{_dist_name(eps[0])}"
            )
        return _registered[name]
    if eps:
        return _load("backbone", name, eps)
    known = sorted(set(_registered) | set(_entry_points(BACKBONE_GROUP)))
    raise unknown_name_error("backbone", name, known + _specs_with_name(name))


def _specs_with_name(name: str) -> list[str]:
    specs = []
    for prefix in BUILTIN_SOURCES:
        try:
            if name in get_source(prefix).list_models():
                specs.append(f"{prefix}:{name}")
        except GradfeatError:
            continue
    return specs


def source_names() -> list[str]:
    """The prefixes of all sources, built in or registered as entry points."""
    return sorted(set(BUILTIN_SOURCES) | set(_entry_points(SOURCE_GROUP)))


def get_source(prefix: str) -> BackboneSource:
    """The source for ``PREFIX:NAME`` specs.

    Args:
        prefix: e.g. ``"timm"``.

    Raises:
        GradfeatError: Unknown prefix, duplicated, or its plugin fails to import.
    """
    eps = _entry_points(SOURCE_GROUP).get(prefix, ())
    builtin = BUILTIN_SOURCES.get(prefix)
    if builtin is not None:
        own = f"{builtin.__module__}:{builtin.__qualname__}"
        foreign = tuple(ep for ep in eps if ep.value != own)
        if foreign:
            raise GradfeatError(
                f"backbone source {prefix!r} is built in and also registered by "
                f"{_dist_name(foreign[0])} ({foreign[0].value}); uninstall that package"
            )
        return builtin()
    if not eps:
        raise GradfeatError(
            f"unknown backbone source {prefix!r}; known: {', '.join(source_names())}"
        )
    source_cls = _load("backbone source", prefix, eps)
    return source_cls()


def list_backbones(pattern: str = "*") -> list[str]:
    """All model specs matching a shell-style wildcard, sorted.

    Specs are ``SOURCE:NAME`` for each source and bare names for registered and
    entry-point backbones. A source that fails to load is skipped with a warning.

    Args:
        pattern: e.g. ``"timm:resnet*"``, ``"*:resnet18"``, ``"bigan*"``.

    >>> list_backbones("torchvision:resnet1*")
    ['torchvision:resnet101', 'torchvision:resnet152', 'torchvision:resnet18']
    """
    names = set(_registered) | set(_entry_points(BACKBONE_GROUP))
    for prefix in source_names():
        if ":" in pattern and not fnmatch.fnmatchcase(prefix, pattern.split(":", 1)[0]):
            continue
        try:
            names.update(f"{prefix}:{n}" for n in get_source(prefix).list_models())
        # A broken source plugin must not hide the others' names.
        except Exception as e:
            warnings.warn(f"skipping backbone source {prefix!r}: {e}", stacklevel=2)
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))
