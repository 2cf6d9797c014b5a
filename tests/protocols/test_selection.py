"""Every choice is made on the validation split; the test split is read once."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from gradfeat_plugin.data import get_dataset
from gradfeat_plugin.data.registry import dataset_targets
from gradfeat_plugin.protocols import run_protocols

from .conftest import NUM_TRAIN, Splits, digits_tensors, make_cfg

SWEEP = [1e-3, 3e-2]


def _splits(test_labels: torch.Tensor | None = None) -> Splits:
    """The digits with 200 training images held out as the validation split."""
    images, labels = digits_tensors()
    train = TensorDataset(images[: NUM_TRAIN - 200], labels[: NUM_TRAIN - 200])
    val = TensorDataset(images[NUM_TRAIN - 200 : NUM_TRAIN], labels[NUM_TRAIN - 200 : NUM_TRAIN])
    test_labels = labels[NUM_TRAIN:] if test_labels is None else test_labels
    test = TensorDataset(images[NUM_TRAIN:], test_labels)
    return Splits("digits", train, test, 10, "multiclass", val)


def _cfg():
    cfg = make_cfg(epochs=2)
    cfg.TRAIN.LR_SWEEP = SWEEP
    cfg.FINETUNE.OPTIMIZERS = ["adam", "sgd"]
    return cfg


def test_the_test_labels_never_influence_a_choice(backbone):
    names = ["linear", "gradfeat", "finetune"]
    honest = run_protocols(names, backbone, _splits(), _cfg(), progress=False)
    # Test labels shifted by one class: every test prediction is scored differently.
    _, labels = digits_tensors()
    shifted = (labels[NUM_TRAIN:] + 1) % 10
    scrambled = run_protocols(names, backbone, _splits(shifted), _cfg(), progress=False)
    for a, b in zip(honest, scrambled):
        assert a.extra["selected_on"] == b.extra["selected_on"] == "validation"
        assert a.extra["setting"] == b.extra["setting"], a.protocol
        assert a.extra["values_by_setting"] == b.extra["values_by_setting"], a.protocol
        assert a.value != b.value, a.protocol  # the reported number is the test one
        values = a.extra["values_by_setting"]
        assert a.extra["setting"] == max(values, key=values.__getitem__)
        assert a.extra["selection_metric"] == max(values.values())
    linear, gradfeat, finetune = honest
    assert len(finetune.extra["values_by_setting"]) == 4  # 2 optimisers x 2 rates
    assert linear.value > 0.5 and gradfeat.value > 0.5 and finetune.value > 0.5


def test_a_sweep_equals_separate_runs(backbone):
    swept = {
        r.protocol: r
        for r in run_protocols(["linear", "gradfeat"], backbone, _splits(), _cfg(),
                               progress=False)
    }
    for lr in SWEEP:
        cfg = make_cfg(epochs=2)
        cfg.TRAIN.LR = lr
        for single in run_protocols(["linear", "gradfeat"], backbone, _splits(), cfg,
                                    progress=False):
            if single.protocol == "gradfeat" and swept["linear"].extra["lr"] != lr:
                continue  # expanded around another probe than the sweep chose
            label = f"adam, lr {lr:g}"
            assert abs(single.extra["selection_metric"]
                       - swept[single.protocol].extra["values_by_setting"][label]) < 1e-6


def test_without_a_validation_split_the_rows_say_test(backbone, digits):
    cfg = make_cfg(epochs=1)
    cfg.TRAIN.LR_SWEEP = SWEEP
    (linear,) = run_protocols(["linear"], backbone, digits, cfg, progress=False)
    assert linear.extra["selected_on"] == "test"
    assert linear.value == linear.extra["selection_metric"]


def test_a_run_with_one_setting_chose_nothing(backbone, digits):
    # One setting of each, the probe included: nothing was chosen, on any split.
    linear, gradfeat = run_protocols(["linear", "gradfeat"], backbone, digits,
                                     make_cfg(epochs=1), progress=False)
    assert linear.extra["selected_on"] == gradfeat.extra["selected_on"] == "nothing"


def test_the_validation_split_is_a_stratified_hold_out_of_the_training_split():
    full = get_dataset("digits")
    held = get_dataset("digits", val_fraction=0.2, label_fraction=0.5, seed=3)
    train, val = dataset_targets(held.train), dataset_targets(held.val)
    assert len(train) + len(val) == round(0.5 * len(full.train)) or abs(
        len(train) + len(val) - 0.5 * len(full.train)) <= 10
    assert set(held.train.indices).isdisjoint(held.val.indices)
    for label in range(10):
        share = (val == label).sum() / ((train == label).sum() + (val == label).sum())
        assert abs(share - 0.2) < 0.1
    again = get_dataset("digits", val_fraction=0.2, label_fraction=0.5, seed=3)
    assert again.val.indices == held.val.indices
