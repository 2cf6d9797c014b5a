"""Checkpoints: prefix remapping, key reports, refusal of unsafe or damaged files."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from gradfeat_plugin.backbones import create_backbone, load_checkpoint
from gradfeat_plugin.backbones.checkpoint import url_cache_path
from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.errors import GradfeatError


def _encoder(seed: int) -> BiGANEncoder:
    torch.manual_seed(seed)
    return BiGANEncoder(width=4)


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize(
    "wrap, prefix",
    [
        (lambda sd: sd, ""),
        (lambda sd: {f"module.{k}": v for k, v in sd.items()}, "module."),
        (lambda sd: {"model": sd, "epoch": 3}, ""),
        (
            lambda sd: {"state_dict": {f"encoder.{k}": v for k, v in sd.items()}},
            "encoder.",
        ),
        (lambda sd: {"model": {f"module.backbone.{k}": v for k, v in sd.items()}},
         "module.backbone."),
    ],
    ids=["plain", "ddp", "timm", "encoder", "ddp-lightly"],
)
def test_prefixes_are_remapped(tmp_path: Path, wrap, prefix: str) -> None:
    source, target = _encoder(0), _encoder(1)
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(source.state_dict()), path)
    report = load_checkpoint(target, str(path))
    _assert_same_weights(source, target)
    assert (report.prefix, report.missing, report.unexpected) == (prefix, [], [])
    assert report.loaded == sorted(source.state_dict())


def test_lightning_checkpoint_reports_heads_and_missing_keys(tmp_path: Path) -> None:
    source, target = _encoder(0), _encoder(1)
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()
             if not k.startswith("conv4.1.")}
    state["projection_head.weight"] = torch.ones(2, 2)
    state["backbone_momentum.conv1.0.weight"] = torch.ones(1)
    path = tmp_path / "epoch=0.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 0.1}, "epoch": 0}, path)
    before = target.conv4[1].weight.clone()
    with pytest.raises(GradfeatError, match=r"loads \d+ of \d+ tensors .*4 missing, "
                       r"first: conv4.1.bias, conv4.1.running_mean, .*--allow-partial"):
        load_checkpoint(target, str(path))
    assert torch.equal(target.conv1[0].weight, _encoder(1).conv1[0].weight)  # untouched
    state["optimizer_step_buffer"] = torch.ones(1)
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 0.1}, "epoch": 0}, path)
    # The momentum copy and the head are known parts, left out without a warning.
    with pytest.warns(UserWarning, match=r"5 missing keys.*1 unexpected keys "
                      r"\['optimizer_step_buffer'\]"):
        report = load_checkpoint(target, str(path), allow_partial=True)
    assert report.partial
    assert report.prefix == "backbone."
    assert report.unexpected == [
        "backbone_momentum.conv1.0.weight",
        "optimizer_step_buffer",
        "projection_head.weight",
    ]
    assert report.left_out == {"backbone_momentum.": 1, "projection_head.": 1}
    assert report.missing == [f"conv4.1.{k}" for k in
                              ("bias", "num_batches_tracked", "running_mean",
                               "running_var", "weight")]
    assert torch.equal(target.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(target.conv4[1].weight, before)


def test_create_backbone_with_a_checkpoint_path(tmp_path: Path) -> None:
    source = create_backbone("timm:resnet10t", weights="random").model
    path = tmp_path / "resnet10t.pth"
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state}, path)
    bb = create_backbone("timm:resnet10t", weights=str(path))
    assert bb.weights == str(path)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(bb.model(x), source(x), rtol=0, atol=0)


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.0.weight": torch.zeros(1)}, "x": Payload()}, path)
    with pytest.raises(GradfeatError, match="refusing checkpoint .*references code"):
        load_checkpoint(_encoder(0), str(path))
    assert not marker.exists()
    # The same file does run its payload when unpickled without weights_only.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(2048))
    good = tmp_path / "good.pth"
    torch.save(_encoder(0).state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    legacy = tmp_path / "legacy.pth"
    torch.save(_encoder(0).state_dict(), legacy, _use_new_zipfile_serialization=False)
    legacy_truncated = tmp_path / "legacy_truncated.pth"
    legacy_truncated.write_bytes(legacy.read_bytes()[:-100])
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    for path in (garbage, truncated, legacy_truncated, empty):
        with pytest.raises(GradfeatError, match="is corrupt or truncated"):
            load_checkpoint(_encoder(1), str(path))


def test_missing_file_and_unfitting_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(GradfeatError, match="checkpoint not found: .*nope.pth"):
        create_backbone("bigan_encoder", weights=str(tmp_path / "nope.pth"))
    other = tmp_path / "other.pth"
    torch.save({"head.weight": torch.ones(3)}, other)
    with pytest.raises(GradfeatError, match="no tensor in .* fits BiGANEncoder"):
        load_checkpoint(_encoder(0), str(other))
    wide = tmp_path / "wide.pth"
    torch.save(BiGANEncoder(width=8).state_dict(), wide)
    with pytest.raises(GradfeatError, match=r"conv1.0.weight has shape \(8, 3, 4, 4\)"):
        load_checkpoint(_encoder(0), str(wide))
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.ones(1)], not_a_dict)
    with pytest.raises(GradfeatError, match="holds a list, not a state_dict"):
        load_checkpoint(_encoder(0), str(not_a_dict))


def test_url_is_read_from_the_iopath_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    url = "https://checkpoints.invalid/runs/enc.pth"
    with pytest.raises(GradfeatError, match="cannot download checkpoint .*unreachable"):
        load_checkpoint(_encoder(1), url)
    source = _encoder(0)
    cached = Path(url_cache_path(url))
    assert cached.parent.parent == tmp_path / "cache" / "gradfeat_plugin" / "checkpoints"
    assert cached.name == "enc.pth"
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    target = _encoder(1)
    assert load_checkpoint(target, url).missing == []
    _assert_same_weights(source, target)


@pytest.fixture()
def two_servers(tmp_path: Path):
    """Two local HTTP servers, each serving its own ``w/model.pth``."""
    servers = []
    for seed in (0, 1):
        root = tmp_path / f"site{seed}"
        (root / "w").mkdir(parents=True)
        torch.save(_encoder(seed).state_dict(), root / "w" / "model.pth")
        handler = functools.partial(_QuietHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield [f"http://127.0.0.1:{s.server_address[1]}/w/model.pth" for s in servers]
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_url_cache_is_keyed_by_the_whole_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, two_servers
) -> None:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    first, second = two_servers
    for url, seed in ((first, 0), (second, 1), (first, 0)):
        target = _encoder(7)
        assert load_checkpoint(target, url).missing == []
        _assert_same_weights(_encoder(seed), target)
    assert url_cache_path(first) != url_cache_path(second)
    cached = sorted(p.relative_to(tmp_path / "cache") for p in
                    (tmp_path / "cache").rglob("*") if p.is_file())
    assert len(cached) == 2 and all(p.name == "model.pth" for p in cached)
    assert all(p.parts[:2] == ("gradfeat_plugin", "checkpoints") for p in cached)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/a/../../../../tmp/evil.pth",
    "http://127.0.0.1:9/a/%2E%2E/%2e%2e/evil.pth",
    "http://127.0.0.1:9/a/..%5C..%5Cevil.pth",
])
def test_url_with_dot_dot_is_refused_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(GradfeatError, match="its path has '..' segments"):
        load_checkpoint(_encoder(0), url)
    assert not any(tmp_path.rglob("*.pth"))


def test_url_file_name_cannot_leave_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    path = Path(url_cache_path("http://h/x/..hid%20den?.pth"))
    assert path.parent.parent == tmp_path / "cache" / "gradfeat_plugin" / "checkpoints"
    assert path.name == "hid_den"
