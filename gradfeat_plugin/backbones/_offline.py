"""Fail fast and clearly when pretrained weights would need a download without network.

Hub clients retry for most of a minute before giving up offline (Hugging Face) or
block on a socket with no timeout (``torch.hub``, iopath). A short TCP probe of the
download host decides up front whether to download or to use the local cache only.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Iterator
from urllib.parse import urlparse

import torch

from ..errors import GradfeatError

# Seconds to wait for a TCP connection to a download host before calling it offline.
PROBE_TIMEOUT_S = 3.0


def offline_error(spec: str, reason: str) -> GradfeatError:
    """The error for pretrained weights that cannot be had, naming the alternatives.

    Args:
        spec: The model spec the weights were for.
        reason: Why they cannot be loaded (one line).
    """
    reason = reason.strip().splitlines()[0] if reason.strip() else "unavailable"
    return GradfeatError(
        f"cannot load pretrained weights for {spec}: {reason}; use --weights random "
        "for random initialisation or --weights PATH for a local checkpoint"
    )


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the host of ``url`` opens within ``timeout`` seconds.

    Args:
        url: An http(s) URL.
        timeout: Seconds to wait for the connection.
    """
    parsed = urlparse(url)
    if not parsed.hostname:
        return False
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def hf_hub_offline_mode() -> bool:
    """Whether the Hugging Face Hub client is in offline mode (``HF_HUB_OFFLINE=1``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hf_hub_endpoint() -> str:
    """The Hugging Face Hub URL downloads go to (``HF_ENDPOINT`` respected)."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def online(url: str) -> bool:
    """Whether downloads from ``url``'s host should be attempted at all."""
    return not hf_hub_offline_mode() and host_reachable(url)


@contextlib.contextmanager
def hf_hub_cache_only() -> Iterator[None]:
    """Serve Hugging Face Hub files from the local cache only, without retries."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def in_torch_hub_cache(url: str) -> bool:
    """Whether ``torch.hub.load_state_dict_from_url(url)`` loads without downloading."""
    filename = os.path.basename(urlparse(url).path)
    return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", filename))
