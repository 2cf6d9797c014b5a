"""How well a pretrained zoo backbone has learned: scores on the held-out split.

Every recipe is scored the same way on the dataset's test split, next to a randomly
initialised copy of the same architecture: a logistic-regression probe and a
cosine kNN (k = 20) on the pooled features, both fitted on the train split. A
recipe with a pretext head adds its own held-out pretext score (rotation accuracy
on the four rotations of every test image; top-1 of the supervised head).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..data import DatasetSplits, dataset_targets

KNN_K = 20


@torch.no_grad()
def pooled_features(model: nn.Module, dataset: Dataset, batch_size: int = 500) -> Tensor:
    """Pooled features of every item of ``dataset`` (model in eval mode, on CPU)."""
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size)
    features = torch.cat([model(images).float() for images, _ in loader])
    model.train(was_training)
    return features


def probe_accuracy(train: Tensor, train_y: np.ndarray, test: Tensor, test_y: np.ndarray) -> float:
    """Top-1 of a logistic regression on standardised features (train → test)."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(train.numpy(), train_y)
    return float(probe.score(test.numpy(), test_y))


def knn_accuracy(
    train: Tensor, train_y: np.ndarray, test: Tensor, test_y: np.ndarray, k: int = KNN_K
) -> float:
    """Top-1 of a majority vote of the ``k`` cosine-nearest training items."""
    bank = nn.functional.normalize(train, dim=1)
    queries = nn.functional.normalize(test, dim=1)
    labels = torch.as_tensor(train_y)
    nearest = (queries @ bank.T).topk(min(k, len(bank)), dim=1).indices
    votes = nn.functional.one_hot(labels[nearest], int(labels.max()) + 1).sum(dim=1)
    return float((votes.argmax(dim=1).numpy() == test_y).mean())


def feature_scores(model: nn.Module, splits: DatasetSplits) -> dict[str, float]:
    """``probe_top1`` and ``knn_top1`` of ``model``'s pooled features on ``splits``."""
    train_y = np.asarray(dataset_targets(splits.train))
    test_y = np.asarray(dataset_targets(splits.test))
    train = pooled_features(model, splits.train)
    test = pooled_features(model, splits.test)
    return {
        "probe_top1": round(probe_accuracy(train, train_y, test, test_y), 4),
        "knn_top1": round(knn_accuracy(train, train_y, test, test_y), 4),
    }


def held_out_scores(
    backbone: nn.Module,
    random_backbone: Callable[[], nn.Module],
    splits: DatasetSplits,
    pretext_score: Callable[[Dataset], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The held-out scores recorded in a zoo model's metadata.

    Args:
        backbone: The pretrained backbone.
        random_backbone: Makes a randomly initialised copy of the architecture.
        splits: The pretraining dataset, normalised as the backbone reads it.
        pretext_score: The recipe's own held-out score on the test split, if any.

    Returns:
        ``{"split": "test", "pretrained": {...}, "random_encoder": {...}}`` with
        ``probe_top1`` and ``knn_top1`` for both, plus the pretext score (e.g.
        ``rotation_top1``) under ``pretrained``. Accuracies are fractions.
    """
    scores: dict[str, Any] = {"split": "test", "knn_k": KNN_K}
    if splits.task != "multiclass" or len(set(dataset_targets(splits.train))) < 2:
        return scores
    pretrained = feature_scores(backbone, splits)
    if pretext_score is not None:
        pretrained.update(pretext_score(splits.test))
    scores["pretrained"] = pretrained
    scores["random_encoder"] = feature_scores(random_backbone(), splits)
    return scores
