"""A result's setting: the keys that can change its number (where θ1's outputs were
kept changes none; a half-precision cache does, and float32 is what older results
used), resolved by what the run used, narrowed to what its protocol reads, and said
in words."""

import pytest

from gradfeat_plugin.results.setting import (
    UNSET,
    protocol_setting,
    resolved_setting,
    setting_notes,
    setting_of_config,
    setting_words,
)

from .records import make_config

OLD = "DATA:\n  DATASET: digits\nTRAIN:\n  SEED: 1\n"
NEW = (
    "DATA:\n  DATASET: digits\n  CACHE: disk\n  CACHE_DIR: /scratch\n"
    "  CACHE_DTYPE: float32\nTRAIN:\n  SEED: 2\n"
)


def test_cache_policy_and_folder_are_not_part_of_the_setting():
    assert setting_of_config(NEW) == setting_of_config(OLD) == (
        ("DATA.DATASET", '"digits"'),
    )
    half = NEW.replace("float32", "float16")
    assert setting_of_config(half) == (
        ("DATA.CACHE_DTYPE", '"float16"'), ("DATA.DATASET", '"digits"'),
    )


def test_keys_added_later_read_as_the_value_older_results_had():
    """A config written before GRAD.BIAS, TRAIN.LR_BY_PROTOCOL and the validation
    split existed is the setting a new config gets with the values the old code
    used; the new defaults are another setting."""
    old = {k: v for k, v in setting_of_config(make_config())
           if not k.startswith(("GRAD.", "TRAIN.LR_BY_PROTOCOL", "DATA.VAL_FRACTION",
                                "FINETUNE.HEAD_INIT"))}
    as_before = setting_of_config(make_config(DATA__VAL_FRACTION=0.0,
                                              FINETUNE__HEAD_INIT="random"))
    assert dict(as_before) == old
    assert dict(setting_of_config(make_config())) != old


def test_each_protocol_keeps_only_the_keys_that_change_its_number():
    setting = resolved_setting(dict(
        weights="pretrained", split="layer3", extra={"input_size": [3, 32, 32]},
        config=make_config(TRAIN__LR_BY_PROTOCOL__FINETUNE=0.001,
                           TRAIN__LR_BY_PROTOCOL__LINEAR=0.01),
    ))
    finetune = protocol_setting(setting, "finetune")
    assert finetune["TRAIN.LR_BY_PROTOCOL.FINETUNE"] == "0.001"
    assert finetune["MODEL.SPLIT"] == '["layer3"]'
    assert finetune["MODEL.INPUT_SIZE"] == "[3, 32, 32]"
    for protocol in ("linear", "grad", "gradfeat", "knn"):
        narrowed = protocol_setting(setting, protocol)
        assert "TRAIN.LR_BY_PROTOCOL.FINETUNE" not in narrowed
    # The probe and kNN read the whole network; ω̄ and the ablation feed the
    # gradient term only; kNN trains nothing.
    assert "MODEL.SPLIT" not in protocol_setting(setting, "linear")
    assert "ABLATION.THETA2" in protocol_setting(setting, "grad")
    assert "ABLATION.THETA2" not in protocol_setting(setting, "finetune")
    for protocol in ("linear", "grad", "gradfeat", "finetune"):
        assert "TRAIN.LR_BY_PROTOCOL.LINEAR" in protocol_setting(setting, protocol)
    knn = protocol_setting(setting, "knn")
    assert "TRAIN.EPOCHS" not in knn and knn["KNN.K"] == "20"
    assert "TRAIN.BATCH_SIZE" in knn
    # SGD's settings reach the linear models when they train with SGD.
    assert "SGD.MOMENTUM" not in protocol_setting(setting, "linear")
    sgd = {**setting, "TRAIN.OPTIMIZER": '"sgd"'}
    assert "SGD.MOMENTUM" in protocol_setting(sgd, "linear")
    # A plugin protocol keeps every key.
    assert protocol_setting(setting, "plugin") == setting


def test_a_record_is_resolved_by_what_it_ran_with():
    default_split = resolved_setting(dict(
        weights="pretrained; θ1=pretrained θ2=random ω=pretrained", split="layer3",
        config=make_config(ABLATION__THETA2="random")))
    named_split = resolved_setting(dict(
        weights="pretrained", split="layer3",
        config=make_config(MODEL__SPLIT=["layer3"], ABLATION__THETA2="random")))
    assert default_split == named_split
    assert default_split["MODEL.WEIGHTS"] == '"pretrained"'
    assert default_split["ABLATION.THETA2"] == '"random"'
    # Without a config, the weights column still names the ablation.
    bare = resolved_setting(dict(weights="random; θ1=random θ2=random ω=random",
                                 split="", config=None))
    assert bare == {"MODEL.WEIGHTS": '"random"', "ABLATION.THETA1": '"random"',
                    "ABLATION.THETA2": '"random"', "ABLATION.PROBE": '"random"'}


@pytest.mark.parametrize("key, value, words", [
    ("MODEL.SPLIT", '["conv4", "conv5"]', "θ2 = conv4, conv5"),
    ("DATA.LABEL_FRACTION", "0.1", "10 % labels"),
    ("DATA.LABEL_FRACTION", "0.02", "2 % labels"),
    ("ABLATION.THETA2", '"random"', "θ2 random"),
    ("MODEL.WEIGHTS", '"random"', "weights random"),
    ("MODEL.WEIGHTS", '"/ckpt/dir/simclr.pth"', "weights simclr.pth"),
    ("TRAIN.LR", "0.001", "lr 0.001"),
    ("TRAIN.LR_BY_PROTOCOL.FINETUNE", "0.001", "fine-tuning lr 0.001"),
    ("TRAIN.LR_BY_PROTOCOL.FINETUNE", "null", "fine-tuning lr default"),
    ("MODEL.WEIGHTS_KEY", '""', "weights key default"),
    ("MODEL.INPUT_SIZE", "[3, 64, 64]", "input 3×64×64"),
    ("TRAIN.EPOCHS", "30", "30 epochs"),
    ("GRAD.BIAS", "false", "grad bias off"),
    ("KNN.K", "5", "kNN k 5"),
    ("PRETRAIN.SIMCLR.BLUR_SIGMAS", "[0.1, 2.0]",
     "PRETRAIN.SIMCLR.BLUR_SIGMAS = 0.1, 2"),
    ("TRAIN.LR", UNSET, "lr unset"),
])
def test_setting_words(key, value, words):
    assert setting_words(key, value) == words


def test_a_note_names_the_value_a_config_without_the_key_had():
    """A stored config drops a key at its implied value (ABLATION.INIT default,
    DATA.VAL_FRACTION 0 before the validation split); a note says that value."""
    ntk = (("ABLATION.INIT", '"ntk"'), ("DATA.VAL_FRACTION", "0.1"), ("TRAIN.LR", "0.1"))
    older = (("TRAIN.LR", "0.1"),)
    notes = setting_notes([ntk, older])
    assert notes[ntk] == ["ABLATION.INIT=ntk", "DATA.VAL_FRACTION=0.1"]
    assert notes[older] == ["ABLATION.INIT=default", "DATA.VAL_FRACTION=0.0"]
    lr = (("TRAIN.LR", "0.01"),)
    assert setting_notes([older, (("TRAIN.OPTIMIZER", '"sgd"'),) + lr])[older] == [
        "TRAIN.LR=0.1", "TRAIN.OPTIMIZER=unset"]
