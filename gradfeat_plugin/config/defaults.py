"""The one defaults tree every run starts from (fvcore ``CfgNode``)."""

from __future__ import annotations

from fvcore.common.config import CfgNode

_C = CfgNode()

_C.MODEL = CfgNode()
# A model spec: timm:NAME, torchvision:NAME, zoo:NAME or an entry-point name.
_C.MODEL.SPEC = "zoo:rotation_mnist5k"
# pretrained, random, or a local path / URL of a checkpoint.
_C.MODEL.WEIGHTS = "pretrained"
# Key prefix of the backbone inside a checkpoint (student_backbone, model.backbone,
# ...); empty picks the prefix that fits the model.
_C.MODEL.WEIGHTS_KEY = ""
# Input size fed to the backbone: N or C,H,W (e.g. 32 or "3,32,32"); null uses the
# size the checkpoint's metadata records, else the backbone family's default.
_C.MODEL.INPUT_SIZE = None
# Keywords of the model's constructor (timm, torchvision, zoo or entry-point factory),
# e.g. {img_size: 32, patch_size: 8} for a ViT pretrained on 32-pixel images, or
# {in_chans: 1}; --model-kwargs KEY=VALUE ... replaces them.
_C.MODEL.KWARGS = CfgNode(new_allowed=True)
# Per-channel normalisation of the images: one value per channel ([0.5, 0.5, 0.5]) or
# a name (imagenet, inception, clip: timm's constants); null uses the model's own
# (its pretrained_cfg: timm's convention, the zoo's recorded values).
_C.MODEL.MEAN = None
_C.MODEL.STD = None
# θ2 module names; empty means the backbone family's default.
_C.MODEL.SPLIT = []
_C.MODEL.FOLD_BN = True
_C.MODEL.NTK = True
# The w1 head of linear and gradfeat in the NTK parametrisation of the authors' code:
# logits = √(1/num_classes)·W f + √0.1·b, W and b trained (same functions as a
# plain head, other optimiser steps); ω̄ is the effective weight √(1/num_classes)·W.
# LINEAR.NTK_HEAD sets the linear probe's apart.
_C.MODEL.NTK_HEAD = False
_C.MODEL.ENGINE = "auto"
# Accept a checkpoint that leaves some of the model's tensors unloaded (rows then
# say "partial"); by default that is an error.
_C.MODEL.ALLOW_PARTIAL_WEIGHTS = False

_C.DATA = CfgNode()
_C.DATA.DATASET = "mnist5k"
# Root folder of torchvision datasets, image folders and VOCdevkit.
_C.DATA.DATA_DIR = ""
# Fraction of training labels kept (stratified, seeded) for low-shot evaluation.
_C.DATA.LABEL_FRACTION = 1.0
# Fraction of the (label-fraction) training split held out, stratified and seeded,
# as the validation split on which every choice is made (optimiser, learning rate,
# the probe ω̄); the test split is read once, for the chosen setting. 0 holds out
# nothing: choices are then made on the test split and the rows say so.
_C.DATA.VAL_FRACTION = 0.1
# Augmentation is off for the linear-model protocols, as in the paper, so that
# frozen θ1 outputs can be cached.
_C.DATA.AUGMENT = False
# DataLoader workers reading images; -1 means min(8, CPUs - 1), but none with
# augmentation and for the zoo's pretraining: workers draw other augmentations than
# the main process, so numbers would depend on the CPU count. Stored θ1 outputs are
# read in the main process, one gather per batch.
_C.DATA.NUM_WORKERS = -1
# Where θ1's outputs are stored (without augmentation): auto, memory, disk or off.
# auto estimates their size from the first image and the dataset lengths and keeps
# them in memory (on the GPU when the run is on one and they fit) when they take at
# most half of the available RAM, else in a memory-mapped file written during the
# θ1 pass, else off: θ1 runs every step. The run logs which, and how many GB.
_C.DATA.CACHE = "auto"
# Parent folder of the memory-mapped files (a fresh subfolder, removed at the end
# of the run); empty means the system's temporary folder.
_C.DATA.CACHE_DIR = ""
# dtype θ1's outputs are stored in: float32, float16 or bfloat16 (half the bytes;
# read back as float32).
_C.DATA.CACHE_DTYPE = "float32"

_C.TRAIN = CfgNode()
_C.TRAIN.EPOCHS = 10
_C.TRAIN.BATCH_SIZE = 64
_C.TRAIN.SEED = 0
# adam or sgd; the paper trains every linear model with Adam.
_C.TRAIN.OPTIMIZER = "adam"
_C.TRAIN.LR = 1e-3
# Scale the learning rate by batch_size * world_size / 256, as lightly does.
_C.TRAIN.SCALE_LR = False
# The learning rate is multiplied by LR_DECAY every LR_DECAY_EVERY of training.
_C.TRAIN.LR_DECAY = 0.5
_C.TRAIN.LR_DECAY_EVERY = 0.25
# Standardise pooled features with their training-set mean and std: a fixed affine
# map before the heads of the linear models (linear, grad, gradfeat). It keeps them
# exactly as expressive and conditions Adam when features share a large offset.
# Fine-tuning moves the features, so its head reads them as they are; False hands
# every head its features as they are (the authors' code standardises nothing).
_C.TRAIN.STANDARDIZE_FEATURES = True
# Reuse θ1's outputs across epochs (only without augmentation); False is the older
# spelling of DATA.CACHE off.
_C.TRAIN.CACHE_FEATURES = True
# Batch size of the one pass that computes and stores θ1's outputs. Its activations
# are the run's largest transient (at 224 px a ResNet's stem output alone is 3.2 MB
# per image), so it is the default training batch rather than larger; on CPU a batch
# of 64 also ran the pass 1.5x faster than 256 (benchmarks/scale.py).
_C.TRAIN.CACHE_BATCH_SIZE = 64
# Validate every N epochs; 0 validates once, after the last epoch.
_C.TRAIN.VAL_EVERY_N_EPOCHS = 0
# Clip the gradient norm of each step of linear, grad and gradfeat (the authors'
# code clips at 10); 0 turns clipping off. Fine-tuning has FINETUNE.CLIP_GRAD_NORM.
_C.TRAIN.CLIP_GRAD_NORM = 0.0
# Learning rates each trained protocol is run with (one run each, chosen on the
# validation split); empty runs TRAIN.LR (or TRAIN.LR_BY_PROTOCOL) alone.
_C.TRAIN.LR_SWEEP = []
# Learning rate of one protocol instead of TRAIN.LR; null keeps TRAIN.LR.
_C.TRAIN.LR_BY_PROTOCOL = CfgNode()
_C.TRAIN.LR_BY_PROTOCOL.LINEAR = None
_C.TRAIN.LR_BY_PROTOCOL.GRAD = None
_C.TRAIN.LR_BY_PROTOCOL.GRADFEAT = None
_C.TRAIN.LR_BY_PROTOCOL.FINETUNE = None

_C.ADAM = CfgNode()
_C.ADAM.BETAS = (0.5, 0.999)
_C.ADAM.WEIGHT_DECAY = 1e-6

_C.SGD = CfgNode()
_C.SGD.MOMENTUM = 0.9
_C.SGD.WEIGHT_DECAY = 5e-5

# The linear protocol's own settings (its head is the probe ω̄ of grad and gradfeat);
# null takes the general one. Its learning rate is TRAIN.LR_BY_PROTOCOL.LINEAR.
_C.LINEAR = CfgNode()
# The probe's head in the NTK parametrisation (True) or plain (False); null:
# MODEL.NTK_HEAD.
_C.LINEAR.NTK_HEAD = None
# Weight decay of the probe's optimiser; null: ADAM.WEIGHT_DECAY or SGD.WEIGHT_DECAY.
_C.LINEAR.WEIGHT_DECAY = None
# Training epochs of the probe; null: TRAIN.EPOCHS.
_C.LINEAR.EPOCHS = None
# The probe's learning rate is multiplied by TRAIN.LR_DECAY every LR_DECAY_EVERY of
# its training; null: TRAIN.LR_DECAY_EVERY.
_C.LINEAR.LR_DECAY_EVERY = None

_C.FINETUNE = CfgNode()
# Train the whole network instead of θ2 and the head.
_C.FINETUNE.WHOLE_NETWORK = False
# Optimisers tried; the best validation metric is reported, as in the paper.
_C.FINETUNE.OPTIMIZERS = ["adam", "sgd"]
# Clip the gradient norm of each fine-tuning step (the authors' code clips at 10);
# 0 turns clipping off.
_C.FINETUNE.CLIP_GRAD_NORM = 10.0
# Where the head starts: probe (the linear probe chosen on the validation split, its
# standardisation folded in: linear probing then fine-tuning), random (nn.Linear's
# initialisation, the paper's start) or zero (weight and bias 0).
_C.FINETUNE.HEAD_INIT = "probe"
# Fine-tune θ2 with its BatchNorms folded into the convolutions before them (eval-
# mode statistics; the same function at the start, no BatchNorm while training), as
# the authors' code fine-tunes its BN-free θ2; False keeps them, in training mode.
_C.FINETUNE.FOLD_BN = False

_C.GRAD = CfgNode()
# The gradient baseline's trainable bias (ω̄ᵀJw2 + b); the authors' code has none.
_C.GRAD.BIAS = True

# The paper's Table 1 ablation: the gradient term of grad and gradfeat is taken
# through a network whose θ1 and/or θ2 are re-initialised (seeded by TRAIN.SEED),
# and/or with a random ω instead of the trained probe ω̄. Activations always come
# from the pretrained network. Each is "pretrained" or "random".
_C.ABLATION = CfgNode()
_C.ABLATION.THETA1 = "pretrained"
_C.ABLATION.THETA2 = "pretrained"
_C.ABLATION.PROBE = "pretrained"
# How the random parts are drawn. default: θ2's layers by their own initialisers
# (BatchNorms reset, then folded), ω as nn.Linear's weight (std 1/√(3d)). ntk: as
# the authors' NTKConv2d/NTKLinear.init(): θ2's BatchNorms reset and folded, then
# every convolution's (linear layer's) effective weight drawn N(0, 1/out_channels)
# (out_features) and its bias N(0, 0.1); ω N(0, 1/num_classes). A random θ1 is
# always drawn by its layers' own initialisers (the authors' θ1 is a plain network).
_C.ABLATION.INIT = "default"

_C.KNN = CfgNode()
_C.KNN.K = 20
_C.KNN.TEMPERATURE = 0.1
# L2-normalise features before the neighbour search, as lightly does.
_C.KNN.NORMALIZE = True

_C.TRAINER = CfgNode()
_C.TRAINER.ACCELERATOR = "auto"
_C.TRAINER.DEVICES = 1
_C.TRAINER.NUM_NODES = 1
_C.TRAINER.STRATEGY = "auto"
_C.TRAINER.PRECISION = "32-true"

_C.RESULTS = CfgNode()
# SQLite results store; empty means the default documented in the README.
_C.RESULTS.PATH = ""


_C.PRETRAIN = CfgNode()
# Hyperparameters of the zoo's pretraining recipes (benchmarks/pretrain.py, zoo:NAME).
_C.PRETRAIN.BATCH_SIZE = 32
# Adam with a cosine decay to zero over the run.
_C.PRETRAIN.LR = 2e-3
_C.PRETRAIN.WEIGHT_DECAY = 1e-5
# Training images used; 0 means the whole train split (small values for smoke tests).
_C.PRETRAIN.MAX_SAMPLES = 0
_C.PRETRAIN.BIGAN = CfgNode()
_C.PRETRAIN.BIGAN.LATENT_DIM = 64
# Channels of the first generator/discriminator layer (DCGAN-style, 32x32).
_C.PRETRAIN.BIGAN.WIDTH = 32
_C.PRETRAIN.BIGAN.LR = 2e-4
_C.PRETRAIN.BIGAN.BETAS = (0.5, 0.999)
_C.PRETRAIN.BIGAN.DROPOUT = 0.2
_C.PRETRAIN.SIMCLR = CfgNode()
_C.PRETRAIN.SIMCLR.TEMPERATURE = 0.5
_C.PRETRAIN.SIMCLR.HIDDEN_DIM = 256
_C.PRETRAIN.SIMCLR.OUTPUT_DIM = 64
# lightly's SimCLRTransform adapted to small grayscale digits: no flips, no hue or
# saturation, milder crops.
_C.PRETRAIN.SIMCLR.MIN_SCALE = 0.4
_C.PRETRAIN.SIMCLR.CJ_PROB = 0.8
_C.PRETRAIN.SIMCLR.CJ_STRENGTH = 0.5
_C.PRETRAIN.SIMCLR.BLUR_PROB = 0.5
_C.PRETRAIN.SIMCLR.BLUR_SIGMAS = (0.1, 1.0)


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of the defaults.

    >>> cfg = get_cfg()
    >>> cfg.TRAIN.LR
    0.001
    """
    return _C.clone()
