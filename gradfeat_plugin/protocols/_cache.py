"""θ1's outputs and pooled features, computed once and reused every epoch.

Without augmentation the frozen part of the network sees the same images every
epoch, so its outputs are computed in one pass and stored (on the CPU); every
protocol of a run then reads them instead of running θ1 again.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..linearize import LinearizedBackbone

CACHE_KINDS = ("boundary", "features")


class CachedInputs(Dataset):
    """``(inputs, target)`` pairs read from stored tensors.

    Args:
        inputs: One tensor (items are tensors) or a tuple of tensors (items are
            tuples, which the default collate turns into lists of batches).
        targets: Labels (``(N,)``) or multi-hot label vectors (``(N, C)``).
    """

    def __init__(self, inputs: Tensor | Sequence[Tensor], targets: Tensor) -> None:
        self.inputs = inputs if isinstance(inputs, Tensor) else tuple(inputs)
        self.targets = targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[object, Tensor]:
        if isinstance(self.inputs, Tensor):
            return self.inputs[index], self.targets[index]
        return tuple(t[index] for t in self.inputs), self.targets[index]


@torch.no_grad()
def _map_batches(
    fn: Callable[[object], tuple[Tensor, ...]],
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    as_tuple: bool,
    description: str = "",
) -> CachedInputs:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    outputs: list[tuple[Tensor, ...]] = []
    targets: list[Tensor] = []
    for inputs, target in tqdm(loader, desc=description, disable=not description):
        if isinstance(inputs, list):
            inputs = [t.to(device) for t in inputs]
        else:
            inputs = inputs.to(device)
        outputs.append(tuple(t.cpu() for t in fn(inputs)))
        targets.append(torch.as_tensor(target))
    stacked = tuple(torch.cat(parts) for parts in zip(*outputs))
    return CachedInputs(stacked if as_tuple else stacked[0], torch.cat(targets))


class FrozenOutputs:
    """The frozen network's outputs on a dataset, each computed on first use.

    Args:
        backbone: The linearised backbone whose prefix (θ1) and suffix define them.
        batch_size: Batch size of the computing pass.
        num_workers: DataLoader workers of the computing pass.
        device: Where the pass runs; results are stored on the CPU.
        progress: Show a progress bar for each pass.
    """

    def __init__(
        self,
        backbone: LinearizedBackbone,
        batch_size: int,
        num_workers: int = 0,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> None:
        self.backbone = backbone.eval()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = torch.device(device)
        self.progress = progress
        self._store: dict[tuple[str, int], CachedInputs] = {}

    def boundary(self, dataset: Dataset) -> CachedInputs:
        """θ1's outputs (``forward_prefix``) for every item of ``dataset``."""
        key = ("boundary", id(dataset))
        if key not in self._store:
            self.backbone.to(self.device)
            self._store[key] = _map_batches(
                self.backbone.forward_prefix,
                dataset,
                self.batch_size,
                self.num_workers,
                self.device,
                as_tuple=True,
                description="storing θ1 outputs" if self.progress else "",
            )
        return self._store[key]

    def features(self, dataset: Dataset) -> CachedInputs:
        """Pooled features ``f`` of every item of ``dataset`` (from θ1's outputs)."""
        key = ("features", id(dataset))
        if key not in self._store:
            self._store[key] = _map_batches(
                lambda boundary: (self.backbone.activations_from_prefix(boundary),),
                self.boundary(dataset),
                self.batch_size,
                0,
                self.device,
                as_tuple=False,
                description="pooling stored features" if self.progress else "",
            )
        return self._store[key]

    def get(self, kind: str, dataset: Dataset) -> CachedInputs:
        """``boundary`` or ``features`` of ``dataset``."""
        return self.boundary(dataset) if kind == "boundary" else self.features(dataset)
