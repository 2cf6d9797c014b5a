"""``knn``: lightly's weighted kNN classifier on the frozen pooled features."""

from __future__ import annotations

import copy
from typing import Any, Dict, Tuple

import torch
from fvcore.common.config import CfgNode
from lightly.utils.benchmarking import KNNClassifier
from torch import Tensor, nn
from torchmetrics.classification import MultilabelAveragePrecision

from ..linearize import LinearizedBackbone
from ..linearize._split import SplitSpec
from ._base import check_finite, check_task


class KNNProtocol(KNNClassifier):
    """Weighted kNN (InstDisc/MoCo style) through ``Trainer.validate``.

    The first validation dataloader gives the training set (the feature bank), the
    second the evaluation set. Multi-class runs log lightly's ``val_knn_top1`` and
    ``val_knn_top5``. Multi-label runs score each label by the similarity-weighted
    vote of the ``k`` neighbours and log ``val_knn_map``.

    Args:
        model: Backbone (forward returns ``(B, d)``); unused when ``cached``.
        num_classes: Number of classes (labels, for multi-label tasks).
        cfg: The run's config (``cfg.KNN``).
        task: ``multiclass`` or ``multilabel``.
        cached: Inputs are pooled features ``f`` instead of images.
        optimizer: Ignored (kNN does not train); accepted for a uniform signature.
        split: Ignored; accepted for a uniform signature.
        batch_size_per_device: Ignored; accepted for a uniform signature.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> from gradfeat_plugin.config import get_cfg
    >>> knn = KNNProtocol(BiGANEncoder(width=8), num_classes=10, cfg=get_cfg())
    >>> knn(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 64])
    """

    cache = "features"
    needs_probe = False

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        cfg: CfgNode,
        task: str = "multiclass",
        cached: bool = False,
        optimizer: str | None = None,
        split: SplitSpec = None,
        batch_size_per_device: int | None = None,
    ) -> None:
        check_task(task)
        if isinstance(model, LinearizedBackbone):
            raise ValueError("knn needs the original backbone, not a linearised one")
        super().__init__(
            model=None if cached else copy.deepcopy(model).eval(),
            num_classes=num_classes,
            knn_k=cfg.KNN.K,
            knn_t=cfg.KNN.TEMPERATURE,
            train_dataloader_idx=0,
            val_dataloader_idx=1,
            topk=tuple(sorted({1, min(5, num_classes)})),
            normalize=cfg.KNN.NORMALIZE,
        )
        self.task = task
        self.cached = cached
        if task == "multilabel":
            self.val_map = MultilabelAveragePrecision(num_labels=num_classes)

    @property
    def metric_name(self) -> str:
        """The metric a result reports: ``val_knn_top1`` or ``val_knn_map``."""
        return "val_knn_map" if self.task == "multilabel" else "val_knn_top1"

    @classmethod
    def optimizer_names(cls, cfg: CfgNode) -> list[str]:
        """kNN has no optimiser; one run."""
        return [""]

    @classmethod
    def can_cache(cls, cfg: CfgNode) -> bool:
        """kNN always reads pooled features."""
        return True

    def num_trainable_parameters(self) -> int:
        """kNN trains nothing."""
        return 0

    def _prepare_features(self, features: Tensor) -> Tensor:
        check_finite(features, "features", "knn")
        return super()._prepare_features(features)

    def concat_train_features(self) -> None:
        if self.task != "multilabel":
            return super().concat_train_features()
        features = self.all_gather(torch.cat(self._train_features, dim=0))
        targets = self.all_gather(torch.cat(self._train_targets, dim=0))
        self._train_features, self._train_targets = [], []
        self._train_features_tensor = features.flatten(end_dim=-2).t().contiguous()
        self._train_targets_tensor = targets.flatten(end_dim=-2).to(features.dtype)

    def validation_step(  # type: ignore[override]
        self, batch: Tuple[Tensor, ...], batch_idx: int, dataloader_idx: int
    ) -> Dict[str, Any] | None:
        if self.task != "multilabel" or dataloader_idx != self.val_dataloader_idx:
            return super().validation_step(batch, batch_idx, dataloader_idx)
        inputs, targets = batch[0], batch[1]
        if self.model is None:
            features = self._prepare_features(inputs)
        else:
            features = self(inputs)
        if batch_idx == 0:
            self.concat_train_features()
        assert self._train_features_tensor is not None
        assert self._train_targets_tensor is not None
        similarity = features @ self._train_features_tensor
        weight, index = similarity.topk(min(self.knn_k, similarity.shape[1]), dim=1)
        weight = (weight / self.knn_t).exp()
        scores = (weight.unsqueeze(-1) * self._train_targets_tensor[index]).sum(1)
        self.val_map.update(scores.float(), targets.long())
        self.log("val_knn_map", self.val_map, prog_bar=True, batch_size=len(targets))
        return None
