"""θ1's outputs and pooled features, computed once and reused every epoch.

Without augmentation the frozen part of the network sees the same images every
epoch, so its outputs are computed in one pass and stored; every protocol of a run
then reads them instead of running θ1 again. Where they are stored is a
:class:`CachePolicy`: in memory (on the GPU when the run is on one and they fit),
in a memory-mapped file written during the pass (its pages can be dropped and read
back, so they never count as the process's anonymous memory), or nowhere (θ1 runs
every step). Stored batches are read with one gather per batch
(:class:`CachedBatches`), not item by item.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import hashlib
import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from pytorch_lightning import Callback
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from tqdm import tqdm

from ..errors import GradfeatError, ProtocolFailed
from ..linearize import LinearizedBackbone
from ._base import epoch_seed

CACHE_KINDS = ("boundary", "features")
#: ``DATA.CACHE`` values.
CACHE_POLICIES = ("auto", "memory", "disk", "off")
#: ``DATA.CACHE_DTYPE`` values: the dtype θ1's outputs are stored in.
CACHE_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
#: ``auto`` keeps the cache in memory when it takes at most this share of the
#: available RAM (or of the free memory of the run's GPU).
MEMORY_SHARE = 0.5

#: Lightning's advice for any sized IterableDataset; CachedBatches reads in the
#: main process, so its length is exact.
ITERABLE_LEN_WARNING = ".*IterableDataset.* has `__len__` defined.*"

log = logging.getLogger(__name__)


def available_ram() -> int:
    """Bytes of RAM the kernel could give without swapping (``MemAvailable``)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


#: Cache folders are named ``gradfeat-cache-PID-HOST-...`` (the process that made
#: them and a tag of its host), so a later run can tell those of dead processes.
_FOLDER = re.compile(r"gradfeat-cache-(\d+)-([0-9a-f]{8})-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process
    return True


def remove_stale_cache_folders(directory: str) -> list[str]:
    """Remove the cache folders in ``directory`` (the system's temporary folder when
    empty) left by processes of this host that no longer run (killed during the
    θ1 pass, say).

    Returns:
        The folders removed.
    """
    parent = directory or tempfile.gettempdir()
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _FOLDER.match(name)
        if match is None or match.group(2) != _host_tag():
            continue
        if _alive(int(match.group(1))):
            continue
        path = os.path.join(parent, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d cache folder(s) of dead processes", len(removed))
    return removed


def check_cache_directory(directory: str) -> None:
    """Refuse a ``DATA.CACHE_DIR`` the θ1 pass could not write its files in: a file,
    a read-only folder or a link to one, or a missing path whose nearest existing
    parent is not a writable folder. Empty means the system's temporary folder.

    Raises:
        GradfeatError: What is wrong, in one line.
    """
    path = directory or tempfile.gettempdir()
    existing = next(
        (p for p in (path, *_parents(path)) if os.path.lexists(p)), path
    )
    if not os.path.isdir(existing):
        raise GradfeatError(
            f"DATA.CACHE_DIR {directory or path}: {existing} is not a folder; "
            "set DATA.CACHE_DIR to a writable folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GradfeatError(
            f"DATA.CACHE_DIR {directory or path}: folder {os.path.realpath(existing)} "
            "is not writable; set DATA.CACHE_DIR to a writable folder"
        )


def _parents(path: str) -> list[str]:
    parents, current = [], os.path.abspath(path)
    while os.path.dirname(current) != current:
        current = os.path.dirname(current)
        parents.append(current)
    return parents


def default_num_workers(value: int, augment: bool = False) -> int:
    """``DATA.NUM_WORKERS``: ``-1`` means ``min(8, CPUs - 1)``, or ``0`` with
    ``augment`` (workers draw other augmentations than the main process, so the
    numbers would depend on the machine's CPU count); others as given."""
    if value >= 0:
        return value
    if augment:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cpus or 1) - 1))


@dataclass(frozen=True)
class CachePolicy:
    """Where θ1's outputs are stored, and in which dtype.

    Attributes:
        mode: ``auto``, ``memory``, ``disk`` or ``off`` (see ``DATA.CACHE``).
        directory: Parent folder of the memory-mapped files; empty means the
            system's temporary folder. The files live in a fresh subfolder that
            :meth:`FrozenOutputs.close` removes.
        dtype: ``float32``, ``float16`` or ``bfloat16``; read back as the dtype
            θ1 computed.
    """

    mode: str = "memory"
    directory: str = ""
    dtype: str = "float32"


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def release_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc's ``malloc_trim``).

    Memory freed after a large transient (the linearisation's self-check, a θ1
    pass over big batches) otherwise stays in the process's anonymous memory, by
    chance more or less of it, so the peak of what follows would depend on the
    allocator's history rather than on the data. A no-op off glibc.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class ReleaseFreedMemory(Callback):
    """Hands the heap a training step freed back to the system
    (:func:`release_freed_memory`) after a step, at most once every ``interval``
    seconds: kept, what the allocator holds grows over an epoch's steps, so the
    peak would grow with the dataset. Slow steps (large images) release after every
    step; fast ones about once a second, which costs them nothing measurable.

    Args:
        interval: Least seconds between two releases.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self._last = time.monotonic()

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            release_freed_memory()
            self._last = time.monotonic()


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def _free_bytes(folder: str) -> int:
    """Free bytes of the disk ``folder`` is on (or would be created on)."""
    existing = next((p for p in (folder, *_parents(folder)) if os.path.isdir(p)), "/")
    return shutil.disk_usage(existing).free


class CachedInputs(Dataset):
    """``(inputs, target)`` pairs read from stored tensors.

    Items are read one by one (``dataset[i]``) or a batch at a time with one gather
    per tensor (``dataset.batch(indices)``, what :class:`CachedBatches` does).

    Args:
        inputs: One tensor (items are tensors) or a tuple of tensors (items are
            tuples, batches lists of tensors), in memory or memory-mapped.
        targets: Labels (``(N,)``) or multi-hot label vectors (``(N, C)``).
        dtype: The dtype inputs are read as, when they are stored in another.
        mapped: The inputs are memory-mapped: batches gather sorted rows.
    """

    def __init__(
        self,
        inputs: Tensor | Sequence[Tensor],
        targets: Tensor,
        dtype: torch.dtype | None = None,
        mapped: bool = False,
    ) -> None:
        self.inputs = inputs if isinstance(inputs, Tensor) else tuple(inputs)
        self.targets = targets
        self.dtype = dtype
        self.mapped = mapped

    def __len__(self) -> int:
        return len(self.targets)

    def _read(self, tensor: Tensor) -> Tensor:
        return tensor if self.dtype is None else tensor.to(self.dtype)

    def subset(self, index: Tensor) -> "CachedInputs":
        """Items ``index`` as a new :class:`CachedInputs` (copied into memory)."""
        inputs, targets = self.batch(index)
        return CachedInputs(inputs if isinstance(inputs, Tensor) else tuple(inputs), targets)

    def __getitem__(self, index: int) -> tuple[object, Tensor]:
        if isinstance(self.inputs, Tensor):
            return self._read(self.inputs[index]), self.targets[index]
        return tuple(self._read(t[index]) for t in self.inputs), self.targets[index]

    @property
    def device(self) -> torch.device:
        """Where the stored inputs are."""
        first = self.inputs if isinstance(self.inputs, Tensor) else self.inputs[0]
        return first.device

    def _gather(self, tensor: Tensor, index: Tensor, pin: bool) -> Tensor:
        if tensor.is_cuda:
            return self._read(tensor.index_select(0, index.to(tensor.device)))
        shape = (len(index), *tensor.shape[1:])
        out = torch.empty(shape, dtype=self.dtype or tensor.dtype, pin_memory=pin)
        if self.mapped:
            # Rows of a mapped file read in file order, then put in the batch's order.
            ordered, where = index.sort()
            out[where] = self._read(tensor.index_select(0, ordered))
        elif self.dtype is not None:
            out.copy_(tensor.index_select(0, index))
        else:
            torch.index_select(tensor, 0, index, out=out)
        return out

    def batch(self, index: Tensor, pin_memory: bool = False) -> tuple[object, Tensor]:
        """Items ``index`` as one batch: ``(inputs, targets)``, inputs a tensor or a
        list of tensors (as the default collate gives), gathered in one read each.

        Args:
            index: Item indices (a 1-D integer tensor), in the batch's order.
            pin_memory: Gather CPU tensors into pinned memory, for non-blocking
                copies to a GPU.
        """
        if isinstance(self.inputs, Tensor):
            inputs: object = self._gather(self.inputs, index, pin_memory)
        else:
            inputs = [self._gather(t, index, pin_memory) for t in self.inputs]
        targets = self.targets.index_select(0, index.to(self.targets.device))
        return inputs, targets


class CachedBatches(IterableDataset):
    """Batches of a :class:`CachedInputs`, one gather each, the next gathered by a
    thread while the current one is used.

    A shuffled pass orders the items exactly as ``DataLoader(shuffle=True)`` would
    (a seed drawn from torch's global generator when the pass starts, then
    ``randperm``), so a protocol that seeds each epoch sees the same batches.

    Args:
        source: The stored inputs.
        batch_size: Items per batch (the last batch may be smaller).
        shuffle: A new order every pass.
        pin_memory: Gather into pinned memory (for a CUDA target).
    """

    def __init__(
        self, source: CachedInputs, batch_size: int, shuffle: bool, pin_memory: bool = False
    ) -> None:
        self.source = source
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pin_memory = pin_memory and source.device.type == "cpu"

    def __len__(self) -> int:
        return math.ceil(len(self.source) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[object, Tensor]]:
        size = len(self.source)
        if self.shuffle:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(size)
        # The next batch is gathered by a thread while the current one is used.
        with ThreadPoolExecutor(1, thread_name_prefix="gradfeat-gather") as pool:
            pending = None
            for index in order.split(self.batch_size) if size else ():
                ready = pending
                pending = pool.submit(self.source.batch, index, self.pin_memory)
                if ready is not None:
                    yield ready.result()
            if pending is not None:
                yield pending.result()


class EpochShuffle(Sampler[int]):
    """The order a worker-less ``DataLoader(shuffle=True)`` gives in an epoch of a
    protocol fitted by Lightning, from the seed and the epoch alone.

    Such a loader draws its order from torch's global generator, which the
    protocol seeds at each epoch's start (:func:`epoch_seed`): in the first epoch
    the order is the first number drawn after seeding; in later ones Lightning
    makes the epoch's iterator after seeding, and making it draws one number
    first. With workers the order would be drawn before the seeding; this sampler
    gives the same order whatever the workers. Lightning tells it the epoch.

    Args:
        size: Number of items.
        seed: The run's seed (``TRAIN.SEED``).
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        stream = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        for _ in range(1 if self.epoch == 0 else 2):
            seed = int(torch.empty((), dtype=torch.int64).random_(generator=stream).item())
        generator = torch.Generator().manual_seed(seed)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def cached_loader(
    source: CachedInputs, batch_size: int, shuffle: bool, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader of :class:`CachedBatches` (``batch_size=None``: batches come whole)."""
    return DataLoader(
        CachedBatches(source, batch_size, shuffle, pin_memory), batch_size=None
    )


class _Store:
    """Allocates the stored tensors: in memory on a device, or in mapped files."""

    def __init__(
        self, where: str, device: torch.device, dtype: torch.dtype, directory: str
    ) -> None:
        self.where, self.device, self.dtype = where, device, dtype
        self.parent = directory
        self.directory: str | None = None
        self.files = 0
        self.bytes = 0

    def allocate(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        dtype = self.dtype if like.is_floating_point() else like.dtype
        numel = math.prod(shape)
        self.bytes += numel * dtype.itemsize
        if self.where != "disk":
            return torch.empty(shape, dtype=dtype, device=self.device)
        if self.directory is None:
            if self.parent:
                os.makedirs(self.parent, exist_ok=True)
            self.directory = tempfile.mkdtemp(
                prefix=f"gradfeat-cache-{os.getpid()}-{_host_tag()}-",
                dir=self.parent or None,
            )
        self.files += 1
        path = os.path.join(self.directory, f"{self.files}.bin")
        size = max(1, numel * dtype.itemsize)
        with open(path, "wb") as handle:
            try:
                # Blocks allocated now: a sparse file on a full disk would end the
                # run with SIGBUS when a page of the mapping is first written.
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(handle.fileno(), 0, size)
                else:
                    handle.truncate(size)
            except OSError as err:
                self.close()
                where = self.parent or tempfile.gettempdir()
                why = (f"the disk has no room for its {_size(size)}"
                       if err.errno in (errno.ENOSPC, errno.EDQUOT) else err.strerror)
                raise GradfeatError(
                    f"cannot store the θ1 cache in {where}: {why}; free space, set "
                    "DATA.CACHE_DIR to another disk, or use DATA.CACHE off"
                ) from None
        return torch.from_file(path, shared=True, size=numel, dtype=dtype).view(shape)

    def close(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _overflow_error(count: int, dtype: torch.dtype) -> ProtocolFailed:
    """The failure of the protocols whose stored inputs overflowed the cache's dtype."""
    name = str(dtype).removeprefix("torch.")
    return ProtocolFailed(
        f"{count} of θ1's outputs overflow DATA.CACHE_DTYPE {name} (largest "
        f"{torch.finfo(dtype).max:.4g}); set DATA.CACHE_DTYPE float32"
    )


@torch.no_grad()
def _map_batches(
    fn: Callable[[object], tuple[Tensor, ...]],
    batches: Any,
    size: int,
    device: torch.device,
    store: _Store,
    as_tuple: bool,
    description: str = "",
) -> CachedInputs:
    """Run ``fn`` over ``batches`` (``(inputs, target)`` pairs) and store its outputs
    in tensors of ``size`` rows allocated by ``store`` after the first batch."""
    stored: list[Tensor] = []
    targets: list[Tensor] = []
    start = 0
    compute_dtype = None
    overflow: Tensor | int = 0
    for inputs, target in tqdm(batches, desc=description, disable=not description):
        if isinstance(inputs, (list, tuple)):
            inputs = [t.to(device, non_blocking=True) for t in inputs]
        else:
            inputs = inputs.to(device, non_blocking=True)
        outputs = fn(inputs)
        rows = len(target)
        if any(t.dim() == 0 or len(t) != rows for t in outputs):
            # Stored rows are read back per image: an output that is not one row
            # per image (TNT's pixel tokens are images x patches) would be mixed up.
            raise GradfeatError(
                "θ1's outputs at the θ2 boundary are not one row per image (shapes "
                f"{[tuple(t.shape) for t in outputs]} for {rows} images), so they "
                "cannot be stored; set DATA.CACHE off or choose another --split"
            )
        if not stored:
            stored = [store.allocate((size, *t.shape[1:]), t) for t in outputs]
            compute_dtype = outputs[0].dtype
        for into, output in zip(stored, outputs):
            if into.dtype != output.dtype and into.is_floating_point():
                # Cast where the outputs are; counted without a sync per batch.
                converted = output.to(into.dtype)
                overflow = overflow + (torch.isinf(converted) & torch.isfinite(output)).sum()
                output = converted
            into[start : start + len(output)].copy_(output)
        start += len(outputs[0])
        targets.append(torch.as_tensor(target).cpu())
        # The batch's activations, freed now, handed back before the next batch:
        # kept by the allocator, what it keeps would grow with the number of
        # batches, and so the pass's peak with the dataset.
        inputs = outputs = output = converted = None  # type: ignore[assignment]
        release_freed_memory()
    if int(overflow):
        raise _overflow_error(int(overflow), stored[0].dtype)
    cast = compute_dtype if stored and stored[0].dtype != compute_dtype else None
    return CachedInputs(
        tuple(stored) if as_tuple else stored[0],
        torch.cat(targets),
        dtype=cast,
        mapped=store.where == "disk",
    )


class FrozenOutputs:
    """The frozen network's outputs on a dataset, each computed on first use.

    θ1's outputs (``boundary``) are stored as the policy says; pooled features
    (``features``, small) always in CPU memory, in float32. Call :meth:`plan` with
    every dataset that will be read to choose where (``auto``) and log it; the
    first read does it otherwise. :meth:`close` removes any mapped files.

    Args:
        backbone: The linearised backbone whose prefix (θ1) and suffix define them.
        batch_size: Batch size of the computing pass.
        num_workers: DataLoader workers of the computing pass.
        device: Where the pass runs.
        progress: Show a progress bar for each pass.
        policy: Where and how θ1's outputs are stored; ``None``: in CPU memory,
            float32.
    """

    def __init__(
        self,
        backbone: LinearizedBackbone,
        batch_size: int,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        progress: bool = False,
        policy: CachePolicy | None = None,
    ) -> None:
        self.backbone = backbone.eval()
        release_freed_memory()  # what the linearisation's self-check freed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = torch.device(device)
        self.progress = progress
        self.policy = policy or CachePolicy()
        self.mode: str | None = None
        self._boundary_store: _Store | None = None
        self._store: dict[tuple[str, int], CachedInputs] = {}
        self._overflow: dict[tuple[str, int], ProtocolFailed] = {}

    def _images(self, dataset: Dataset) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    @torch.no_grad()
    def _bytes_per_item(self, dataset: Dataset) -> int:
        inputs = dataset[0][0]
        self.backbone.to(self.device)
        if isinstance(inputs, (list, tuple)):
            batch: Any = [t.unsqueeze(0).to(self.device) for t in inputs]
        else:
            batch = inputs.unsqueeze(0).to(self.device)
        itemsize = CACHE_DTYPES[self.policy.dtype].itemsize
        return sum(t[0].numel() * itemsize for t in self.backbone.forward_prefix(batch))

    def plan(self, datasets: Sequence[Dataset]) -> str:
        """Choose where θ1's outputs of ``datasets`` go (once) and log it.

        ``auto`` estimates their size from the first item and the datasets'
        lengths: in memory (on the GPU when the pass runs on one and they take at
        most :data:`MEMORY_SHARE` of its free memory) when they take at most that
        share of the available RAM, else memory-mapped files when the disk has room,
        else ``off``. ``memory`` also prefers a GPU that has room.

        Returns:
            The mode chosen: ``memory``, ``disk`` or ``off``.
        """
        if self.mode is not None:
            return self.mode
        mode = self.policy.mode
        total = 0
        where = "cpu"
        if mode != "off" and datasets and len(datasets[0]):
            total = self._bytes_per_item(datasets[0]) * sum(len(d) for d in datasets)
        gpu_fits = self.device.type == "cuda" and total <= MEMORY_SHARE * (
            torch.cuda.mem_get_info(self.device)[0] if self.device.type == "cuda" else 0
        )
        folder = self.policy.directory or tempfile.gettempdir()
        if mode in ("auto", "disk"):
            remove_stale_cache_folders(self.policy.directory)
        if mode == "auto":
            if gpu_fits or total <= MEMORY_SHARE * available_ram():
                mode = "memory"
            else:
                mode = "disk" if total <= _free_bytes(folder) else "off"
        elif mode == "disk" and total > _free_bytes(folder):
            raise GradfeatError(
                f"DATA.CACHE disk needs {_size(total)} in {folder}, which has "
                f"{_size(_free_bytes(folder))} free; free space, set DATA.CACHE_DIR "
                "to another disk, or use DATA.CACHE off"
            )
        if mode == "memory" and gpu_fits:
            where = str(self.device)
        self.mode = mode
        self._boundary_store = _Store(
            "disk" if mode == "disk" else "memory",
            torch.device(where),
            CACHE_DTYPES[self.policy.dtype],
            self.policy.directory,
        )
        place = {"memory": f"in {where} memory", "disk": "in a memory-mapped file",
                 "off": "not stored (θ1 runs every step)"}[mode]
        log.info(
            "θ1 cache: %s (DATA.CACHE %s), %s, %.2f GB as %s",
            mode, self.policy.mode, place, total / 1e9, self.policy.dtype,
        )
        return mode

    def boundary(self, dataset: Dataset) -> CachedInputs:
        """θ1's outputs (``forward_prefix``) for every item of ``dataset``.

        Stored even when the policy is ``off`` (a caller that asks wants them).
        """
        key = ("boundary", id(dataset))
        if key in self._overflow:
            raise self._overflow[key]
        if key not in self._store:
            self.plan([dataset])
            assert self._boundary_store is not None
            self.backbone.to(self.device)
            try:
                self._store[key] = _map_batches(
                    self.backbone.forward_prefix,
                    self._images(dataset),
                    len(dataset),
                    self.device,
                    self._boundary_store,
                    as_tuple=True,
                    description="storing θ1 outputs" if self.progress else "",
                )
            except ProtocolFailed as exc:
                self._overflow[key] = exc  # every protocol that reads them fails alike
                raise
            finally:
                release_freed_memory()  # the pass's batch activations
        return self._store[key]

    def features(self, dataset: Dataset, direct: bool = False) -> CachedInputs:
        """Pooled features ``f`` of every item of ``dataset``: from stored θ1 outputs,
        or straight from the images when the policy stores none or ``direct``.

        Args:
            dataset: The images.
            direct: Compute them from the images without storing θ1's outputs
                (unless those are stored already).
        """
        key = ("features", id(dataset))
        if key not in self._store:
            memory = _Store("memory", torch.device("cpu"), torch.float32, "")
            backbone = self.backbone
            stored = ("boundary", id(dataset)) in self._store
            if not stored and (direct or self.plan([dataset]) == "off"):
                backbone.to(self.device)
                fn: Callable[[Any], tuple[Tensor, ...]] = lambda images: (
                    backbone.activations_from_prefix(backbone.forward_prefix(images)),
                )
                batches: Any = self._images(dataset)
            else:
                fn = lambda boundary: (backbone.activations_from_prefix(boundary),)
                batches = cached_loader(self.boundary(dataset), self.batch_size, False)
            self._store[key] = _map_batches(
                fn,
                batches,
                len(dataset),
                self.device,
                memory,
                as_tuple=False,
                description="pooling features" if self.progress else "",
            )
        return self._store[key]

    def get(self, kind: str, dataset: Dataset) -> CachedInputs:
        """``boundary`` or ``features`` of ``dataset``."""
        return self.boundary(dataset) if kind == "boundary" else self.features(dataset)

    @property
    def stored_bytes(self) -> int:
        """Bytes of θ1's outputs stored so far (memory or file)."""
        return 0 if self._boundary_store is None else self._boundary_store.bytes

    def close(self) -> None:
        """Forget the stored tensors and remove any memory-mapped files."""
        self._store.clear()
        if self._boundary_store is not None:
            self._boundary_store.close()
