"""The cache keys in a result's setting: where θ1's outputs were kept changes no
number; a half-precision cache does, and float32 is what older results used."""

from gradfeat_plugin.results.setting import setting_of_config

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
