"""Label fractions keep round(fraction × count) of every class, also where that
count is not whole (the digits' classes have 139 to 146 training images)."""

from __future__ import annotations

import numpy as np

from gradfeat_plugin.data import dataset_targets, get_dataset, label_fraction_indices


def test_each_class_keeps_its_rounded_share():
    targets = np.array([0] * 9 + [1] * 8 + [2] * 6)
    keep = label_fraction_indices(targets, 0.4, seed=0)
    # 3.6, 3.2 and 2.4 examples: rounded, not floored (3, 3, 2).
    assert np.bincount(targets[keep]).tolist() == [4, 3, 2]


def test_digits_at_thirty_percent():
    full = np.bincount(dataset_targets(get_dataset("digits").train))
    assert full.tolist() == [142, 146, 142, 146, 145, 145, 145, 143, 139, 144]
    kept = get_dataset("digits", label_fraction=0.3, seed=0)
    # 42.6, 43.8, ..., 41.7, 43.2 rounded; flooring would keep 42, 43, ..., 41, 43.
    assert np.bincount(dataset_targets(kept.train)).tolist() == [
        43, 44, 43, 44, 44, 44, 44, 43, 42, 43]
