"""Pretrained weights without network fail fast, naming the offline alternatives."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gradfeat_plugin.backbones import _offline, create_backbone
from gradfeat_plugin.errors import GradfeatError

ALTERNATIVES = r"--weights random .*--weights PATH"


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No weights cached locally, so loading pretrained ones would need a download."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:resnet18"])
def test_genuinely_offline(empty_caches: None, spec: str) -> None:
    if _offline.host_reachable(_offline.hf_hub_endpoint()):
        pytest.skip("network available; this test must not download weights")
    start = time.monotonic()
    expected = f"cannot load pretrained weights for {spec}.*{ALTERNATIVES}"
    with pytest.raises(GradfeatError, match=expected):
        create_backbone(spec)
    assert time.monotonic() - start < 2 * _offline.PROBE_TIMEOUT_S


@pytest.mark.parametrize("spec", ["timm:convnext_atto", "torchvision:resnet18"])
def test_unreachable_hosts_are_never_contacted(
    empty_caches: None, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.setattr(_offline, "host_reachable", lambda url, timeout=0: False)
    with pytest.raises(GradfeatError, match=f"{spec}: .*unreachable.*{ALTERNATIVES}"):
        create_backbone(spec)


def test_hf_hub_offline_mode_is_restored(
    empty_caches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(_offline, "host_reachable", lambda url, timeout=0: False)
    with pytest.raises(GradfeatError, match="not in the local Hugging Face cache"):
        create_backbone("timm:resnet18")
    assert constants.HF_HUB_OFFLINE is False


def test_model_without_published_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_offline, "host_reachable", lambda url, timeout=0: False)
    expected = f"timm has no pretrained weights.*{ALTERNATIVES}"
    with pytest.raises(GradfeatError, match=expected):
        create_backbone("timm:botnet50ts_256")
