"""The zoo's on-disk cache and crash-safe (atomic) writes."""

from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any

import torch
from iopath.common.file_io import g_pathmgr, get_cache_dir

CACHE_ENV = "GRADFEAT_CACHE"


def zoo_cache_dir() -> str:
    """Where zoo checkpoints live: ``$GRADFEAT_CACHE``, else iopath's user cache.

    iopath's cache is ``$IOPATH_CACHE`` or ``~/.torch/iopath_cache``; the zoo uses
    its ``gradfeat_plugin/zoo`` subfolder.
    """
    override = os.environ.get(CACHE_ENV)
    if override:
        return override
    return os.path.join(get_cache_dir(), "gradfeat_plugin", "zoo")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it.

    The bytes go to a unique temporary file in the same folder, which is then
    renamed over ``path`` (an atomic replace on POSIX and Windows).

    Args:
        path: Destination file; its folder is created if needed.
        data: The complete contents.
    """
    folder = os.path.dirname(os.path.abspath(path))
    g_pathmgr.mkdirs(folder)
    temporary = os.path.join(
        folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp"
    )
    try:
        with g_pathmgr.open(temporary, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(g_pathmgr.get_local_path(temporary), path)
    finally:
        if g_pathmgr.exists(temporary):
            g_pathmgr.rm(temporary)


def metadata_path(checkpoint: str) -> str:
    """The metadata JSON that sits next to a checkpoint (``x.pth`` -> ``x.json``)."""
    return os.path.splitext(checkpoint)[0] + ".json"


def save_checkpoint(
    checkpoint: str, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> None:
    """Atomically save a backbone ``state_dict`` and its metadata JSON.

    The metadata is written first, so an existing checkpoint always has its
    metadata next to it.

    Args:
        checkpoint: Destination of the plain ``state_dict`` (``torch.save``).
        state_dict: Tensors only, loadable with ``torch.load(weights_only=True)``.
        metadata: JSON-serialisable description of the run.
    """
    atomic_write_bytes(
        metadata_path(checkpoint), (json.dumps(metadata, indent=2) + "\n").encode()
    )
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    atomic_write_bytes(checkpoint, buffer.getvalue())
