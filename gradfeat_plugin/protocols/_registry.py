"""The protocol registry, fed lazily by the ``gradfeat_plugin.protocols`` group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import GradfeatError

ENTRY_POINT_GROUP = "gradfeat_plugin.protocols"

_registry: dict[str, type | EntryPoint] = {}
_entry_points_loaded = False


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    seen: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen and seen[ep.name] != ep.value:
            raise GradfeatError(
                f"protocol {ep.name!r} is declared twice in entry-point group "
                f"{ENTRY_POINT_GROUP} ({seen[ep.name]} and {ep.value}); uninstall one"
            )
        seen[ep.name] = ep.value
        _registry.setdefault(ep.name, ep)


def register_protocol(name: str, cls: type) -> type:
    """Register a protocol class under ``name``; a name can be registered once.

    Protocol classes take ``(model, num_classes, cfg, task, cached, optimizer,
    split, batch_size_per_device)`` and are lightly ``BaseClassifier`` subclasses
    (trained with ``Trainer.fit``) or ``KNNClassifier`` subclasses (``validate``).

    Args:
        name: The name ``create_protocol`` and ``--protocol`` use.
        cls: The protocol class.

    Returns:
        ``cls``, so it can be used as ``register_protocol("x", Cls)`` inline.
    """
    _load_entry_points()
    if name in _registry:
        raise GradfeatError(
            f"protocol {name!r} is already registered; pick another name"
        )
    _registry[name] = cls
    return cls


def list_protocols() -> list[str]:
    """Names of every registered protocol, sorted (built-ins and plugins)."""
    _load_entry_points()
    return sorted(_registry)


def get_protocol_class(name: str) -> type:
    """The class registered as ``name`` (its module is imported on first use)."""
    _load_entry_points()
    if name not in _registry:
        raise GradfeatError(
            f"unknown protocol {name!r}; known: {', '.join(list_protocols())}"
        )
    entry = _registry[name]
    if isinstance(entry, EntryPoint):
        entry = _registry[name] = entry.load()
    return entry


def create_protocol(name: str, **kwargs: Any) -> Any:
    """Build the protocol registered as ``name``.

    Args:
        name: A name from :func:`list_protocols`.
        **kwargs: Constructor arguments: ``model``, ``num_classes``, ``cfg`` and
            optionally ``task``, ``cached``, ``optimizer``, ``split``,
            ``batch_size_per_device``.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> from gradfeat_plugin.config import get_cfg
    >>> probe = create_protocol("linear", model=BiGANEncoder(width=8), num_classes=10,
    ...                         cfg=get_cfg())
    >>> type(probe).__name__
    'LinearProtocol'
    """
    return get_protocol_class(name)(**kwargs)
