"""Where θ1's outputs are stored (DATA.CACHE) changes no number; batches are
gathered in the order a shuffled DataLoader gives."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gradfeat_plugin.config.protocol_kwargs import run_settings
from gradfeat_plugin.errors import GradfeatError
from gradfeat_plugin.linearize import linearize
from gradfeat_plugin.protocols import _cache, run_protocols
from gradfeat_plugin.protocols._base import epoch_seed
from gradfeat_plugin.protocols._cache import (
    CachedInputs,
    CachePolicy,
    EpochShuffle,
    FrozenOutputs,
    cached_loader,
    default_num_workers,
)

from .conftest import make_cfg


def _run(backbone, digits, mode: str, dtype: str = "float32", directory: str = ""):
    cfg = make_cfg(epochs=1)
    cfg.DATA.CACHE, cfg.DATA.CACHE_DTYPE, cfg.DATA.CACHE_DIR = mode, dtype, directory
    results = run_protocols(["linear", "gradfeat"], backbone, digits, cfg, progress=False)
    return {r.protocol: r for r in results}


def _scores(results) -> dict[str, float]:
    return {
        f"{name}/{key}": value
        for name, r in results.items()
        for key, value in r.extra.items()
        if key in ("val_top1", "val_loss")
    }


def test_memory_disk_and_off_give_the_same_numbers(backbone, digits, tmp_path):
    memory = _run(backbone, digits, "memory")
    disk = _run(backbone, digits, "disk", directory=str(tmp_path))
    off = _run(backbone, digits, "off")
    assert memory["gradfeat"].extra["cached"] and disk["gradfeat"].extra["cached"]
    assert not off["gradfeat"].extra["cached"]
    reference = _scores(memory)
    assert set(reference) == {f"{p}/{k}" for p in memory for k in ("val_top1", "val_loss")}
    assert memory["gradfeat"].value > 0.6
    for other in (disk, off):
        for key, value in _scores(other).items():
            assert value == pytest.approx(reference[key], abs=1e-6, rel=1e-6), key
    # The mapped files live in a subfolder of CACHE_DIR that the run removes.
    assert os.listdir(tmp_path) == []


def test_half_precision_storage_is_close(backbone, digits):
    full = _scores(_run(backbone, digits, "memory"))
    for dtype in ("float16", "bfloat16"):
        half = _scores(_run(backbone, digits, "memory", dtype))
        for key, value in half.items():
            tolerance = 0.02 if key.endswith("top1") else 0.05
            assert value == pytest.approx(full[key], abs=tolerance), (dtype, key)


def _frozen(backbone, policy: CachePolicy) -> FrozenOutputs:
    linearized = linearize(backbone.model, backbone.split)
    return FrozenOutputs(linearized, 100, policy=policy)


def test_disk_stores_a_mapped_file_read_back_as_float32(backbone, digits, tmp_path):
    memory = _frozen(backbone, CachePolicy("memory")).boundary(digits.test)
    frozen = _frozen(backbone, CachePolicy("disk", str(tmp_path), "bfloat16"))
    stored = frozen.boundary(digits.test)
    (folder,) = os.listdir(tmp_path)
    files = os.listdir(tmp_path / folder)
    per_item = sum(t[0].numel() for t in memory.inputs) * 2
    assert frozen.stored_bytes == per_item * len(digits.test)
    assert sum(os.path.getsize(tmp_path / folder / f) for f in files) == frozen.stored_bytes
    assert stored.inputs[0].dtype == torch.bfloat16 and stored.mapped
    index = torch.tensor([5, 2, 7, 2, 0])
    inputs, targets = stored.batch(index)
    expected, expected_targets = memory.batch(index)
    assert inputs[0].dtype == torch.float32
    assert torch.equal(targets, expected_targets)
    torch.testing.assert_close(inputs[0], expected[0], atol=0.05, rtol=0.02)
    item, _ = stored[2]
    assert torch.equal(item[0], inputs[0][1])
    frozen.close()
    assert os.listdir(tmp_path) == []


def test_auto_picks_memory_then_disk_then_off(backbone, digits, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger=_cache.__name__)
    assert _frozen(backbone, CachePolicy("auto")).plan([digits.train, digits.test]) == "memory"
    assert "θ1 cache: memory (DATA.CACHE auto), in cpu memory" in caplog.text
    monkeypatch.setattr(_cache, "available_ram", lambda: 1000)
    assert _frozen(backbone, CachePolicy("auto")).plan([digits.train]) == "disk"
    monkeypatch.setattr(_cache.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    assert _frozen(backbone, CachePolicy("auto")).plan([digits.train]) == "off"
    assert "θ1 cache: off (DATA.CACHE auto), not stored" in caplog.text


def test_cache_features_false_is_off():
    cfg = make_cfg()
    cfg.TRAIN.CACHE_FEATURES = False
    cfg.DATA.CACHE = "disk"
    assert run_settings(cfg, ["linear"]).cache.mode == "off"


@pytest.mark.parametrize("mapped", [False, True])
def test_batches_come_in_the_order_of_a_shuffled_dataloader(mapped):
    inputs = torch.arange(103 * 3, dtype=torch.float32).view(103, 3)
    stored = CachedInputs((inputs, -inputs), torch.arange(103), mapped=mapped)
    torch.manual_seed(7)
    expected = list(DataLoader(stored, batch_size=10, shuffle=True))
    torch.manual_seed(7)
    batches = list(cached_loader(stored, 10, shuffle=True))
    assert len(batches) == len(expected) == 11
    for (got, got_targets), (want, want_targets) in zip(batches, expected):
        assert torch.equal(got_targets, want_targets)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert list(cached_loader(CachedInputs(inputs[:0], torch.arange(0)), 10, True)) == []
    plain = list(cached_loader(stored, 50, shuffle=False))
    assert [len(t) for _, t in plain] == [50, 50, 3]
    assert torch.equal(torch.cat([t for _, t in plain]), torch.arange(103))


def test_subset_of_single_tensor_inputs():
    stored = CachedInputs(torch.randn(10, 4), torch.arange(10))
    part = stored.subset(torch.tensor([9, 1]))
    assert torch.equal(part.targets, torch.tensor([9, 1]))
    assert torch.equal(part.inputs, stored.inputs[[9, 1]])


def test_num_workers_minus_one_follows_the_cpus(monkeypatch):
    assert default_num_workers(0) == 0 and default_num_workers(3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    assert default_num_workers(-1) == 8
    assert default_num_workers(-1, augment=True) == 0
    assert default_num_workers(2, augment=True) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert default_num_workers(-1) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert default_num_workers(-1) == 0


def test_epoch_shuffle_is_the_order_of_a_seeded_epoch():
    dataset = TensorDataset(torch.arange(57))
    sampler = EpochShuffle(57, seed=5)
    orders = []
    for epoch in (0, 3):
        torch.manual_seed(epoch_seed(5, epoch))
        if epoch:  # Lightning makes a later epoch's iterator after seeding it
            torch.empty((), dtype=torch.int64).random_()
        expected = list(torch.utils.data.RandomSampler(dataset))
        sampler.set_epoch(epoch)
        torch.manual_seed(123)  # the global generator plays no part
        orders.append(list(sampler))
        assert orders[-1] == expected
    assert orders[0] != orders[1] and sorted(orders[1]) == list(range(57))


def test_image_loader_workers_change_no_number(backbone, digits):
    """Two epochs on images (θ1 every step): one worker gives the numbers of none."""
    values = []
    for workers in (0, 1):
        cfg = make_cfg(epochs=2)
        cfg.DATA.CACHE, cfg.DATA.NUM_WORKERS = "off", workers
        (result,) = run_protocols(["gradfeat"], backbone, digits, cfg, progress=False)
        values.append((result.extra["val_top1"], result.extra["val_loss"]))
    assert values[1] == values[0]


class _PixelTokens(torch.nn.Module):
    """θ1 hands θ2 one row per pixel, not per image (as TNT's pixel embedding does)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.top = torch.nn.Linear(4, 8)

    def forward(self, x):
        tokens = self.stem(x).permute(0, 2, 3, 1).reshape(-1, 4)
        return self.top(tokens).reshape(x.shape[0], -1, 8).mean(1)


def test_outputs_that_are_not_one_row_per_image_are_never_stored(digits):
    from .conftest import TinyBackbone

    torch.manual_seed(0)
    backbone = TinyBackbone(_PixelTokens().eval(), ["top"], 8)
    cfg = make_cfg(epochs=1)
    with pytest.raises(GradfeatError, match="not one row per image.*DATA.CACHE off"):
        run_protocols(["gradfeat"], backbone, digits, cfg, progress=False)
    cfg.DATA.CACHE = "off"
    (gradfeat,) = run_protocols(["gradfeat"], backbone, digits, cfg, progress=False)
    assert gradfeat.status == "ok" and gradfeat.value > 0.1


def test_each_batch_of_the_pass_is_freed_and_handed_back_before_the_next(
    monkeypatch, tmp_path
):
    """What a batch of the θ1 pass allocated is neither referenced nor kept by the
    allocator while the next batch runs, so the pass's peak memory does not grow
    with the number of batches (the dataset)."""
    import weakref

    alive: list[weakref.ref] = []
    events: list[str] = []

    def prefix(images):
        # Nothing of an earlier batch (its images, its outputs) is still held.
        assert all(ref() is None for ref in alive), "an earlier batch is still referenced"
        outputs = (images * 2.0,)
        alive[:] = [weakref.ref(images), weakref.ref(outputs[0])]
        events.append("batch")
        return outputs

    monkeypatch.setattr(_cache, "release_freed_memory", lambda: events.append("release"))
    images = torch.randn(10, 3, 4, 4)
    loader = DataLoader(TensorDataset(images, torch.arange(10)), batch_size=3)
    for where in ("memory", "disk"):
        events.clear()
        alive.clear()
        store = _cache._Store(where, torch.device("cpu"), torch.float32, str(tmp_path))
        stored = _cache._map_batches(prefix, loader, 10, torch.device("cpu"), store, True)
        assert torch.equal(stored.inputs[0], images * 2.0)
        assert events == ["batch", "release"] * 4, where
        store.close()


def test_training_hands_freed_memory_back_at_most_once_an_interval(monkeypatch):
    """Slow steps release after each step; fast ones about once an interval; every
    protocol's Trainer does it."""
    from gradfeat_plugin.protocols.settings import TrainerSettings, build_trainer

    released: list[float] = []
    clock = iter([0.0, 0.4, 0.9, 1.1, 1.1, 1.5, 2.0, 2.1, 5.0, 5.0])
    now = [0.0]

    def tick() -> float:
        now[0] = next(clock)
        return now[0]

    monkeypatch.setattr(_cache.time, "monotonic", tick)
    monkeypatch.setattr(_cache, "release_freed_memory", lambda: released.append(now[0]))
    callback = _cache.ReleaseFreedMemory(interval=1.0)  # started at 0.0
    for _ in range(6):
        callback.on_train_batch_end(None, None, None, None, 0)
    # Steps end at 0.4, 0.9, 1.1 (release, restarted at 1.1), 1.5, 2.0, 2.1 (release).
    assert released == [1.1, 2.1]
    monkeypatch.undo()
    trainer = build_trainer(TrainerSettings(epochs=1, accelerator="cpu"), progress=False)
    assert any(isinstance(c, _cache.ReleaseFreedMemory) for c in trainer.callbacks)
