from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="gradfeat-plugin",
    version="0.1.0",
    description=(
        "Gradients as features: the gradfeat evaluation protocol (Mu, Liang, Li, "
        "ICLR 2020) as a plugin for lightly's benchmark suite."
    ),
    long_description=Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["gradfeat_plugin", "gradfeat_plugin.*"]),
    include_package_data=True,
    # The zoo's pretrained weights, their metadata and manifest.
    package_data={"gradfeat_plugin.zoo": ["weights/*.pth", "weights/*.json"]},
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "timm>=1.0",
        "lightly>=1.5",
        "pytorch-lightning>=2.1",
        "torchmetrics>=1.0",
        "fvcore>=0.1.5",
        "iopath>=0.1.9",
        "mlxtend>=0.23",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "pyyaml>=6.0",
        "tqdm>=4.60",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={
        "gradfeat_plugin.backbones": [
            "bigan_encoder = gradfeat_plugin.backbones.bigan:bigan_encoder",
            "bigan_ali = gradfeat_plugin.backbones.bigan:bigan_ali",
        ],
        "gradfeat_plugin.backbone_sources": [
            "timm = gradfeat_plugin.backbones.sources:TimmSource",
            "torchvision = gradfeat_plugin.backbones.sources:TorchvisionSource",
            "zoo = gradfeat_plugin.backbones.sources:ZooSource",
        ],
        "gradfeat_plugin.protocols": [
            "linear = gradfeat_plugin.protocols.linear:LinearProbeClassifier",
            "grad = gradfeat_plugin.protocols.gradient:GradClassifier",
            "gradfeat = gradfeat_plugin.protocols.gradfeat:GradfeatClassifier",
            "finetune = gradfeat_plugin.protocols.finetune:FinetuneClassifier",
            "knn = gradfeat_plugin.protocols.knn:KNNFeatureClassifier",
        ],
    },
)
