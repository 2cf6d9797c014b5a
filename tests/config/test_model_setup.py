"""The model's setup keys: ``MODEL.KWARGS`` (``--model-kwargs``) and ``MODEL.MEAN`` /
``MODEL.STD`` (``--mean``/``--std``): parsed safely, checked before any work."""

from __future__ import annotations

import re

import pytest

from gradfeat_plugin.cli import main_guard, parse_model_kwargs, parse_normalization
from gradfeat_plugin.config import get_cfg, load_config
from gradfeat_plugin.data.transforms import normalization
from gradfeat_plugin.errors import GradfeatError


def test_model_kwargs_values_are_yaml_scalars_or_python_literals():
    parsed = parse_model_kwargs([
        "img_size=32", "patch_size=8", "drop_rate=1e-3", "class_token=false",
        "act_layer=gelu", "size=32,32", "pad=(1, 2)", "dims=[64, 128]", "note=null",
    ])
    assert parsed == {
        "img_size": 32, "patch_size": 8, "drop_rate": 0.001, "class_token": False,
        "act_layer": "gelu", "size": [32, 32], "pad": [1, 2], "dims": [64, 128],
        "note": None,
    }
    assert type(parsed["img_size"]) is int and type(parsed["drop_rate"]) is float


@pytest.mark.parametrize("items, fragment", [
    (["img_size"], "takes KEY=VALUE pairs such as img_size=32, got 'img_size'"),
    (["2x=1"], "got '2x=1'"),
    (["a=1", "a=2"], "gives a twice"),
    (["a={b: 1}"], "a must be a number, true/false, a name or a list"),
    (["a=[32,"], "--model-kwargs a: cannot read '[32,' as a YAML scalar or list"),
    (["a=__import__('os')"], None),
])
def test_bad_model_kwargs(items, fragment):
    if fragment is None:  # not a literal: kept as the text, never evaluated
        assert parse_model_kwargs(items) == {"a": "__import__('os')"}
        return
    with pytest.raises(GradfeatError, match=re.escape(fragment)):
        parse_model_kwargs(items)


def test_model_kwargs_key_defaults_empty_and_takes_a_mapping():
    assert dict(get_cfg().MODEL.KWARGS) == {}
    cfg = load_config(overrides={"MODEL.KWARGS": {"img_size": 32, "patch_size": 8}})
    assert dict(cfg.MODEL.KWARGS) == {"img_size": 32, "patch_size": 8}
    assert "KWARGS:\n    img_size: 32\n    patch_size: 8" in cfg.dump()


@pytest.mark.parametrize("kwargs, fragment", [
    ({"pretrained": True}, "MODEL.KWARGS may not set pretrained; use --weights"),
    ({"num_classes": 10}, "MODEL.KWARGS may not set num_classes"),
    ({"act": {"inplace": True}}, "MODEL.KWARGS.act must be a number, bool, name"),
])
def test_model_kwargs_validation(capsys, kwargs, fragment):
    status = main_guard(lambda: load_config(overrides={"MODEL.KWARGS": kwargs}) and 0)
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert fragment in err


def test_normalization_names_numbers_and_channels():
    assert normalization("imagenet", "mean") == (0.485, 0.456, 0.406)
    assert normalization("inception", "std") == (0.5, 0.5, 0.5)
    assert normalization([0.1, 0.2, 0.3], "mean") == (0.1, 0.2, 0.3)
    assert normalization([0.25], "std", channels=1) == (0.25,)
    assert normalization(None, "mean") is None
    assert parse_normalization(["0.5", "0.25", "1"], "--std") == [0.5, 0.25, 1.0]
    assert parse_normalization(["imagenet"], "--mean") == "imagenet"


@pytest.mark.parametrize("key, value, fragment", [
    ("MODEL.MEAN", [0.5, 0.5], "--mean (MODEL.MEAN) needs 1 or 3 value(s)"),
    ("MODEL.STD", [0.5, 0.0, 0.5], "--std (MODEL.STD) must be positive"),
    ("MODEL.STD", [0.5, -1.0, 0.5], "--std (MODEL.STD) must be positive"),
    ("MODEL.MEAN", "imagenett", "must be numbers or one of imagenet, inception, clip"),
    ("MODEL.MEAN", [0.5, float("nan"), 0.5], "must be finite"),
])
def test_bad_mean_and_std_are_user_errors(capsys, key, value, fragment):
    status = main_guard(lambda: load_config(overrides={key: value}) and 0)
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and fragment in err


def test_values_must_match_the_channel_count():
    with pytest.raises(GradfeatError, match=r"--mean \(MODEL.MEAN\) needs 1 value"):
        normalization("imagenet", "mean", channels=1)
