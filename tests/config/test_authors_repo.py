"""The authors'-repository preset, resolved into each protocol's settings, equals the
authors' own configs field by field; the seed is the one difference."""

from __future__ import annotations

import math

from gradfeat_plugin.config import load_config
from gradfeat_plugin.config.protocol_kwargs import run_settings

# The authors' settings, transcribed from fmu2/gradfeat20 (commit c0c9679): the
# CIFAR-10 BiGAN (ALI) configs of configs/cifar10/ali/ with θ2 = their hnet's conv3,
# and src/. Each of their modes is one of our protocols: actv (actv.config) the
# linear probe, full (linear_conv3.config) gradfeat, grad (grad_conv3.config) grad,
# finetune_conv3.config fine-tuning. Paths (data_path, *_path) name their files.
THEIRS = {
    "linear": dict(  # configs/cifar10/ali/actv.config
        batchsize=128,  # line 4
        optim="sgd",  # line 5
        lr=1e-2,  # line 6
        wd=1e-6,  # line 7
        niter=80_000,  # line 8
        stepsize=20_000,  # line 9
        # line 12-13: std_hnet1.pt, std_clf0.pt: a plain nn.Linear head
        # (STDClassifier, src/model.py:118-144).
        ntk_head=False,
    ),
    "gradfeat": dict(  # configs/cifar10/ali/linear_conv3.config, mode full (line 10)
        batchsize=128, optim="sgd", lr=1e-1, wd=5e-5,  # lines 4-7
        niter=50_000, stepsize=10_000,  # lines 8-9
        # line 13: ntk_clf1.pt, an NTKClassifier (src/model.py:147-185).
        ntk_head=True,
    ),
    "grad": dict(  # configs/cifar10/ali/grad_conv3.config, mode grad (line 10)
        batchsize=128, optim="sgd", lr=1e-1, wd=5e-5,  # lines 4-7
        niter=50_000, stepsize=10_000,  # lines 8-9
        ntk_head=True,  # line 13: ntk_clf1.pt
        # The logits are the JVP alone (src/benchmark.py:110-112), read by ω without
        # its bias (src/model.py:183, add_bias=False).
        bias=False,
    ),
    "finetune": dict(  # configs/cifar10/ali/finetune_conv3.config
        batchsize=128, optim="sgd", lr=1e-3, wd=5e-5,  # lines 4-7
        niter=50_000, stepsize=10_000,  # lines 8-9
        # line 12: std_hnet1.pt, θ2 as STDHeadNet (src/model.py:30-66): plain
        # convolutions, no BatchNorm (folded, src/util.py:149-173).
        fold_bn=True,
        # line 13: std_clf0.pt, the untrained plain head the probe (actv) starts
        # from too.
        head_init="random",
    ),
}
THEIRS_EVERY_MODE = dict(
    momentum=0.9,  # src/benchmark.py:199
    lr_halving=0.5,  # src/benchmark.py:98-100
    clip_grad_norm=10.0,  # src/benchmark.py:120, in every mode
    # No feature standardisation anywhere in src/: the pooled features meet the
    # head as they are (src/model.py:142-143, 177-178).
    standardize=False,
    # src/util.py:190-192: the whole CIFAR-10 training split trains, the test split
    # is reported; transforms.ToTensor only (util.py:184), no augmentation.
    dataset="cifar10",  # line 1 of every config
    train_images=50_000,
    augment=False,
)
# How they build the network of grad and gradfeat.
THEIRS_NETWORK = dict(
    # linearize_hnet 3 / freeze_hnet [1, 2] (lines 15-16): θ2 is their hnet's conv3,
    # the encoder's fifth convolution.
    split=["conv5"],
    ntk=True,  # NTKHeadNet, src/model.py:69-115
    fold_bn=True,  # no BatchNorm in their θ2 (src/util.py:149-173)
    # Table 1's random θ2 and ω: NTKConv2d.init() and NTKLinear.init(), N(0, 1) in
    # the NTK coordinates (src/util.py:28-36, 68-76).
    ablation_init="ntk",
)
THEIR_SEED = 1818  # src/benchmark.py:17


def _steps_per_epoch(images: int, batch: int) -> int:
    # Their loader keeps the last, partial batch (src/util.py:198-199), as ours does.
    return math.ceil(images / batch)


def _expected(protocol: str) -> dict:
    """Their values for ``protocol`` as our settings: iterations become epochs of
    the training split, the halving step a fraction of training."""
    theirs = dict(THEIRS[protocol])
    steps = _steps_per_epoch(THEIRS_EVERY_MODE["train_images"], theirs["batchsize"])
    niter, stepsize = theirs.pop("niter"), theirs.pop("stepsize")
    return dict(
        theirs,
        epochs=round(niter / steps),
        lr_decay_every=stepsize / niter,
        **{k: v for k, v in THEIRS_EVERY_MODE.items() if k not in ("dataset",)},
    )


def _resolved(cfg, settings, protocol: str) -> dict:
    """The same fields, read from what the config resolves into."""
    kwargs = settings.protocol_kwargs[protocol]
    assert len(kwargs) == 1, "one setting per protocol, as they run"
    kw = kwargs[0]
    train_images = round(50_000 * cfg.DATA.LABEL_FRACTION * (1 - cfg.DATA.VAL_FRACTION))
    resolved = dict(
        batchsize=settings.batch_size,
        optim=kw["optimizer"],
        lr=kw["lr"],
        wd=kw["weight_decay"],
        epochs=settings.trainer_of(protocol).epochs,
        lr_decay_every=kw["lr_decay_every"],
        momentum=kw["momentum"],
        lr_halving=kw["lr_decay"],
        clip_grad_norm=kw["clip_grad_norm"],
        standardize=settings.standardize,
        train_images=train_images,
        augment=settings.augment,
    )
    for key in THEIRS[protocol]:
        if key not in resolved and key not in ("niter", "stepsize"):
            resolved[key] = kw[key]
    return resolved


def _differences(expected: dict, resolved: dict) -> dict:
    return {
        key: (value, resolved.get(key))
        for key, value in expected.items()
        if resolved.get(key) != value
    }


def test_the_authors_repository_preset_equals_their_configs():
    cfg = load_config("paper/bigan_cifar10_authors_repo")
    settings = run_settings(cfg, ["all"])
    differences = {}
    for protocol in THEIRS:
        found = _differences(_expected(protocol), _resolved(cfg, settings, protocol))
        differences.update({f"{protocol}.{k}": v for k, v in found.items()})
    network = dict(
        split=list(cfg.MODEL.SPLIT),
        ntk=cfg.MODEL.NTK,
        fold_bn=cfg.MODEL.FOLD_BN,
        ablation_init=cfg.ABLATION.INIT,
    )
    differences.update(_differences(THEIRS_NETWORK, network))
    dataset = {"dataset": THEIRS_EVERY_MODE["dataset"]}
    differences.update(_differences(dataset, {"dataset": cfg.DATA.DATASET}))
    assert differences == {}, "(theirs, ours): " + repr(differences)
    # The one difference: the seed, which no number is meant to depend on.
    assert cfg.TRAIN.SEED != THEIR_SEED


def test_their_lengths_in_epochs():
    """50K and 80K iterations at 391 steps an epoch (50,000 images at batch 128)."""
    assert _steps_per_epoch(50_000, 128) == 391
    gradfeat, linear = _expected("gradfeat"), _expected("linear")
    assert (gradfeat["epochs"], linear["epochs"]) == (128, 205)
    assert abs(128 * 391 - 50_000) < 391 / 2 and abs(205 * 391 - 80_000) < 391 / 2
    assert (gradfeat["lr_decay_every"], linear["lr_decay_every"]) == (0.2, 0.25)


def test_the_paper_text_preset_keeps_the_defaults_of_the_new_switches():
    """Only the authors'-repository preset turns them on."""
    for name in ("paper/conventions", "paper/bigan_cifar10"):
        cfg = load_config(name)
        assert cfg.TRAIN.STANDARDIZE_FEATURES is True
        assert cfg.DATA.VAL_FRACTION == 0.1
        assert all(value is None for value in cfg.LINEAR.values())
        assert cfg.FINETUNE.FOLD_BN is False
        assert cfg.ABLATION.INIT == "default"
        assert cfg.TRAIN.CLIP_GRAD_NORM == 0
