"""``knn``: lightly's weighted kNN classifier on the frozen pooled features."""

from __future__ import annotations

import copy
from typing import Any, Dict, Sequence, Tuple

import torch
from lightly.utils.benchmarking import KNNClassifier
from torch import Tensor, nn
from torchmetrics.classification import MultilabelAveragePrecision

from ..linearize import LinearizedBackbone
from ._base import check_finite, check_task, feature_topk, plain


class KNNFeatureClassifier(KNNClassifier):
    """Weighted kNN (InstDisc/MoCo style) through ``Trainer.validate``.

    lightly's ``KNNClassifier`` arguments, then plain keywords. The first
    validation dataloader gives the training set (the feature bank), the second the
    evaluation set. Multi-class runs log lightly's ``val_knn_top1`` and
    ``val_knn_top5``. Multi-label runs score each label by the similarity-weighted
    vote of the ``k`` neighbours and log ``val_knn_map``.

    Args:
        model: Backbone (forward returns ``(B, d)``; copied); unused when ``cached``.
        num_classes: Number of classes (labels, for multi-label tasks).
        knn_k: Number of neighbours.
        knn_t: Temperature of the similarity weights.
        topk: Top-k accuracies to log (capped at ``num_classes``).
        normalize: L2-normalise features before the neighbour search.
        task: ``multiclass`` or ``multilabel``.
        cached: Inputs are pooled features ``f`` instead of images.

    >>> from gradfeat_plugin.backbones.bigan import BiGANEncoder
    >>> knn = KNNFeatureClassifier(BiGANEncoder(width=8), num_classes=10)
    >>> knn(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 64])
    """

    cache = "features"
    needs_probe = False
    standardizes_features = False

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        knn_k: int = 20,
        knn_t: float = 0.1,
        topk: Sequence[int] = (1, 5),
        normalize: bool = True,
        *,
        task: str = "multiclass",
        cached: bool = False,
    ) -> None:
        check_task(task)
        if isinstance(model, LinearizedBackbone):
            raise ValueError("knn needs the original backbone, not a linearised one")
        super().__init__(
            model=None if cached else copy.deepcopy(model).eval(),
            num_classes=num_classes,
            knn_k=knn_k,
            knn_t=knn_t,
            train_dataloader_idx=0,
            val_dataloader_idx=1,
            topk=feature_topk(topk, num_classes),
            normalize=normalize,
        )
        self.task = task
        self.cached = cached
        if task == "multilabel":
            self.val_map = MultilabelAveragePrecision(num_labels=num_classes)
        self.hparams.clear()
        self.save_hyperparameters(
            dict(num_classes=num_classes, knn_k=knn_k, knn_t=knn_t, topk=plain(topk),
                 normalize=normalize, task=task, cached=cached)
        )

    @property
    def metric_name(self) -> str:
        """The metric a result reports: ``val_knn_top1`` or ``val_knn_map``."""
        return "val_knn_map" if self.task == "multilabel" else "val_knn_top1"

    @classmethod
    def can_cache(cls, **kwargs: Any) -> bool:
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
