"""The engines on CUDA agree with the CPU (skipped where there is no GPU)."""

from __future__ import annotations

import pytest
import torch

from gradfeat_plugin import linearize
from gradfeat_plugin.linearize import ENGINES

from .models import build
from .test_exactness import random_tangents, relative_error

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize("name", ["timm_resnet18", "timm_vit_tiny", "bigan_encoder"])
def test_cuda_matches_cpu(name, engine):
    lin = linearize(build(name), engine=engine)
    random_tangents(lin)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    f_cpu, jvp_cpu = lin.features(x)
    f_gpu, jvp_gpu = lin.cuda().features(x.cuda())
    assert relative_error(f_gpu.cpu(), f_cpu) < 1e-10
    assert relative_error(jvp_gpu.cpu(), jvp_cpu) < 1e-10
