"""YAML read with limits: size, aliases, nesting and ``_BASE_`` chains, cycles reported.

PyYAML's safe loader never runs code, but a small file can still ask for a huge
structure (an "alias bomb": anchors that reference anchors) or send ``_BASE_``
round in a circle. Everything here is checked on the parsed node graph, before a
Python object is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import GradfeatError

#: Largest config file read, in bytes.
MAX_CONFIG_BYTES = 1 << 20
#: Most ``*alias`` references in one file.
MAX_ALIASES = 64
#: Most values a file may expand to once every alias is written out.
MAX_EXPANDED_NODES = 100_000
#: Deepest nesting of mappings and lists.
MAX_NESTING = 32
#: Longest ``_BASE_`` chain.
MAX_BASE_DEPTH = 8
BASE_KEY = "_BASE_"
YAML_SUFFIXES = (".yaml", ".yml")


def _bad(path: str | os.PathLike, why: str) -> GradfeatError:
    return GradfeatError(f"config file {os.fspath(path)} {why}")


def _expanded_size(node: yaml.Node, path: str | os.PathLike) -> int:
    """Values ``node`` stands for with aliases written out (shared nodes counted once
    per use), refusing recursion and deep nesting."""
    sizes: dict[int, int] = {}

    def size(current: yaml.Node, depth: int, open_nodes: set[int]) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _bad(path, "has an alias that contains itself")
        if depth > MAX_NESTING:
            raise _bad(path, f"nests deeper than {MAX_NESTING} levels")
        total = 1
        if isinstance(current, (yaml.SequenceNode, yaml.MappingNode)):
            open_nodes.add(key)
            children = (
                [v for pair in current.value for v in pair]
                if isinstance(current, yaml.MappingNode)
                else current.value
            )
            for child in children:
                total += size(child, depth + 1, open_nodes)
                if total > MAX_EXPANDED_NODES:
                    raise _bad(
                        path, f"expands to more than {MAX_EXPANDED_NODES:,} values "
                        "through aliases"
                    )
            open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(node, 0, set())


def read_yaml(path: str | os.PathLike) -> Any:
    """One YAML file, parsed safely within the limits of this module.

    Args:
        path: The file.

    Returns:
        The parsed document (``None`` for an empty file).

    Raises:
        GradfeatError: Unreadable, too large, not UTF-8, malformed, or over a limit.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise _bad(
                path, f"is {size:,} bytes; configs are at most {MAX_CONFIG_BYTES:,}"
            )
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise _bad(path, f"cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise _bad(path, "is not UTF-8 text") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, source: str | os.PathLike = "<text>") -> Any:
    """YAML text parsed safely within the limits of this module.

    Args:
        text: The document.
        source: What to call it in errors (a file name).

    Raises:
        GradfeatError: Malformed, or over a limit.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise _bad(source, f"is over {MAX_CONFIG_BYTES:,} characters")
    try:
        aliases = sum(
            isinstance(event, yaml.AliasEvent)
            for event in yaml.parse(text, Loader=yaml.SafeLoader)
        )
        if aliases > MAX_ALIASES:
            raise _bad(
                source, f"uses {aliases} aliases; at most {MAX_ALIASES} are read"
            )
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            return None
        _expanded_size(node, source)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GradfeatError(
            f"config file is not valid YAML: {' '.join(str(exc).split())}"
        ) from None
    except RecursionError:
        raise _bad(source, f"nests deeper than {MAX_NESTING} levels") from None


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child``'s values over ``base``'s, mapping by mapping (as fvcore merges)."""
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def load_yaml_with_base(
    path: str | os.PathLike, _chain: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """A config file with its ``_BASE_`` files merged under it.

    A ``_BASE_`` path is relative to the file that names it; it must be a YAML file,
    chains are at most :data:`MAX_BASE_DEPTH` long, and a file reached twice in one
    chain is a cycle.

    Args:
        path: The config file.

    Returns:
        The merged mapping (``_BASE_`` keys removed).

    Raises:
        GradfeatError: A file breaks a limit, is empty or not a mapping, or the
            ``_BASE_`` chain is missing a file, too long or circular.
    """
    path = Path(path)
    real = path.resolve()
    if real in _chain:
        names = " -> ".join(p.name for p in (*_chain, real))
        raise _bad(_chain[0], f"has a _BASE_ cycle: {names}")
    if len(_chain) > MAX_BASE_DEPTH:
        raise _bad(_chain[0], f"has a _BASE_ chain longer than {MAX_BASE_DEPTH} files")
    data = read_yaml(path)
    if data is None:
        raise _bad(path, "is empty; give at least one KEY: value")
    if not isinstance(data, dict):
        raise _bad(path, f"holds a {type(data).__name__}, not a mapping of config keys")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise _bad(path, f"has a {BASE_KEY} that is not a file name: {base!r}")
    base_path = Path(os.path.expanduser(base))
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    if base_path.suffix not in YAML_SUFFIXES:
        raise _bad(path, f"has {BASE_KEY} {base!r}, which is not a .yaml/.yml file")
    if not base_path.is_file():
        raise _bad(path, f"has {BASE_KEY} {base!r}, which is not found")
    return _merge(load_yaml_with_base(base_path, (*_chain, real)), data)
