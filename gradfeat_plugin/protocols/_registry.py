"""The protocol registry, fed lazily by the ``gradfeat_plugin.protocols`` group."""

from __future__ import annotations

import inspect
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


#: The signature the run builds protocols with (see ``register_protocol``).
PLAIN_SIGNATURE = (
    "(model, batch_size_per_device, lr, feature_dim=None, num_classes, topk, *, "
    "task, cached, optimizer, split, ...)"
)


def check_signature(name: str, cls: type) -> None:
    """Refuse a class written to the old ``(model, num_classes, cfg, ...)`` contract."""
    try:
        parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    except (TypeError, ValueError):
        return
    if "cfg" in parameters:
        raise GradfeatError(
            f"protocol {name!r} ({cls.__module__}.{cls.__qualname__}) takes a config "
            f"(cfg); protocols take plain arguments now: {PLAIN_SIGNATURE}, "
            "as lightly's LinearClassifier (see the README, 'Writing a protocol')"
        )


def register_protocol(name: str, cls: type) -> type:
    """Register a protocol class under ``name``; a name can be registered once.

    Protocol classes are lightly ``BaseClassifier`` subclasses (trained with
    ``Trainer.fit``) or ``KNNClassifier`` subclasses (``validate``) that take plain
    arguments, lightly's ``LinearClassifier(model, batch_size_per_device, lr,
    feature_dim, num_classes, topk)`` plus keywords. The run passes ``model``,
    ``num_classes``, ``batch_size_per_device``, ``task`` (``multiclass`` or
    ``multilabel``), ``cached`` (inputs are stored θ1 outputs or features, as the
    class's ``cache`` attribute says), ``split`` (θ2) and the optimiser's settings
    (``lr``, ``optimizer``, ``betas``, ``weight_decay``, ``momentum``,
    ``scale_lr``, ``lr_decay``, ``lr_decay_every``, ``clip_grad_norm``, ``seed``),
    each only if ``__init__`` names it (or takes ``**kwargs``).

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
    check_signature(name, entry)
    return entry


def create_protocol(name: str, **kwargs: Any) -> Any:
    """Build the protocol registered as ``name``.

    Args:
        name: A name from :func:`list_protocols`.
        **kwargs: Constructor arguments: plain values (see :func:`register_protocol`).

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> probe = create_protocol("linear", model=BiGANEncoder(width=8), num_classes=10)
    >>> type(probe).__name__
    'LinearProbeClassifier'
    """
    return get_protocol_class(name)(**kwargs)
