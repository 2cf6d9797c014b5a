"""Cost of one training step: linear probe vs fine-tuning θ2 vs gradfeat (each engine).

Every step includes the frozen θ1 forward. Steps are timed interleaved in one
process (A B C ... A B C ...); the table gives each method's median step time and
the median over rounds of its ratio to the fine-tuning step of the same round.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the step. On CPU there is
no allocator counter, so the proxy is the bytes autograd saves for backward during
the step (deduplicated by storage) plus the trainable parameters and their
gradients: the part of a step's peak that differs between the methods.

The naive alternative materialises the per-sample gradient features ω̄ᵀJ
(``c × |θ2|`` numbers per image) with ``torch.func.vmap(jacrev(...))`` on a case
small enough to fit, and extrapolates their size to the benchmarked model.

    python benchmarks/speed.py --model resnet18 --split layer4 --image-size 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import timm
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn import functional as F

from gradfeat_plugin import linearize
from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.protocols import SplitNetwork


FORWARD_MODE_ENGINES = ("forward_ad", "func")


class SavedTensorMeter:
    """Counts the bytes autograd saves for backward, each storage once."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.bytes += storage.nbytes()
        return tensor

    @contextmanager
    def record(self) -> Iterator["SavedTensorMeter"]:
        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t):
            yield self


def trainable_bytes(params: list[nn.Parameter]) -> int:
    """Parameters plus their gradients."""
    return 2 * sum(p.numel() * p.element_size() for p in params)


def linear_step(lin, x, y, opt) -> Callable[[], int]:
    params = list(lin.head.parameters())

    def step() -> int:
        with SavedTensorMeter().record() as meter:
            with torch.no_grad():
                f = lin.activations_from_prefix(lin.forward_prefix(x))
            loss = F.cross_entropy(lin.head(f), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return meter.bytes + trainable_bytes(params)

    return step


def gradfeat_step(lin, x, y, opt) -> Callable[[], int]:
    params = [p for p in lin.parameters() if p.requires_grad]

    def step() -> int:
        with SavedTensorMeter().record() as meter:
            loss = F.cross_entropy(lin(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return meter.bytes + trainable_bytes(params)

    return step


def finetune_step(model, split, x, y, num_classes) -> Callable[[], int]:
    network = SplitNetwork(model, split).to(x.device).eval()
    head = nn.Linear(model.num_features, num_classes).to(x)
    params = network.theta2() + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.5, 0.999))

    def step() -> int:
        with SavedTensorMeter().record() as meter:
            with torch.no_grad():
                boundary = network.forward_prefix(x)
            loss = F.cross_entropy(head(network.forward_suffix(boundary)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return meter.bytes + trainable_bytes(params)

    return step


def timed(step: Callable[[], int], device: torch.device) -> tuple[float, int]:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    proxy = step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() - base
    return time.perf_counter() - start, proxy


def naive_features(num_classes: int, batch: int, device: torch.device) -> dict:
    """Materialise ω̄ᵀJ per sample on a small BiGAN encoder and time one linear step."""
    torch.manual_seed(0)
    model = BiGANEncoder(width=16).to(device).eval().requires_grad_(False)
    lin = linearize(model, num_classes=num_classes).to(device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    names = [n for n, _ in lin.named_theta2()]
    primals = {n: p.detach() for n, p in lin.named_theta2()}
    boundary = lin.forward_prefix(x)

    def logits(params, *one):
        one = tuple(b.unsqueeze(0) for b in one)
        return F.linear(functional_call(lin.suffix, params, one).flatten(1), lin.probe_weight)[0]

    start = time.perf_counter()
    jac = vmap(jacrev(logits), in_dims=(None,) + (0,) * len(boundary))(primals, *boundary)
    grads = torch.cat([jac[n].flatten(2) for n in names], dim=2)  # (B, c, |θ2|)
    w2 = torch.zeros(grads.shape[2], device=device, requires_grad=True)
    loss = F.cross_entropy(grads @ w2, y)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    naive_s = time.perf_counter() - start
    step = gradfeat_step(lin, x, y, torch.optim.Adam(
        [p for p in lin.parameters() if p.requires_grad], lr=1e-3))
    step()
    jvp_s, jvp_bytes = timed(step, device)
    return {
        "case": f"BiGANEncoder(width=16), θ2={lin.split}, {num_classes} classes, batch {batch}",
        "theta2_params": grads.shape[2],
        "naive_bytes_per_image": grads[0].numel() * grads.element_size(),
        "naive_step_s": naive_s,
        "jvp_step_s": jvp_s,
        "jvp_step_bytes": jvp_bytes,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="timm model name")
    parser.add_argument("--split", nargs="+", default=["layer4"], help="θ2 module names")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default="speed.json", help="where to write the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    try:
        model = timm.create_model(args.model, num_classes=0).to(device).eval()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model.requires_grad_(False)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)

    steps: dict[str, Callable[[], int]] = {}
    steps["finetune θ2"] = finetune_step(
        timm.create_model(args.model, num_classes=0).to(device).eval(),
        args.split, x, y, args.classes,
    )
    # The forward-mode engines; the others are fallbacks for ops these cannot run.
    for engine in FORWARD_MODE_ENGINES:
        lin = linearize(model, split=args.split, engine=engine, num_classes=args.classes).to(device)
        opt = torch.optim.Adam([p for p in lin.parameters() if p.requires_grad], lr=1e-3)
        if not steps.get("linear probe"):
            steps["linear probe"] = linear_step(lin, x, y, torch.optim.Adam(lin.head.parameters()))
        steps[f"gradfeat ({engine})"] = gradfeat_step(lin, x, y, opt)

    times: dict[str, list[float]] = {k: [] for k in steps}
    memory: dict[str, int] = {}
    for round_ in range(args.warmup + args.rounds):
        for name, step in steps.items():
            seconds, mem = timed(step, device)
            if round_ >= args.warmup:
                times[name].append(seconds)
                memory[name] = max(memory.get(name, 0), mem)

    ref = "finetune θ2"
    rows = []
    for name in steps:
        ratios = [a / b for a, b in zip(times[name], times[ref])]
        rows.append({
            "method": name,
            "median_step_ms": 1e3 * statistics.median(times[name]),
            "time_ratio_vs_finetune": statistics.median(ratios),
            "memory_mb": memory[name] / 2**20,
            "memory_ratio_vs_finetune": memory[name] / memory[ref],
        })
    naive = naive_features(args.classes, 8, device)
    theta2_params = sum(p.numel() for n, p in model.named_parameters()
                        if any(n.startswith(s + ".") for s in args.split))
    naive["extrapolated_bytes_per_image"] = {
        "model": args.model, "split": args.split, "classes": args.classes,
        "bytes": theta2_params * args.classes * 4,
    }

    mem_kind = "CUDA max_memory_allocated" if device.type == "cuda" else \
        "saved-for-backward tensors + trainable params and grads (CPU proxy)"
    print(f"{args.model}, θ2={args.split}, {args.image_size}x{args.image_size}, batch "
          f"{args.batch_size}, {device.type}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds")
    print(f"{'method':<22}{'median ms':>11}{'x finetune':>12}{'memory MB':>12}{'x finetune':>12}")
    for r in rows:
        print(f"{r['method']:<22}{r['median_step_ms']:>11.1f}{r['time_ratio_vs_finetune']:>12.2f}"
              f"{r['memory_mb']:>12.1f}{r['memory_ratio_vs_finetune']:>12.2f}")
    print(f"memory: {mem_kind}")
    print(f"naive per-sample features ω̄ᵀJ: {naive['case']}: "
          f"{naive['naive_bytes_per_image'] / 2**20:.2f} MB per image, step "
          f"{1e3 * naive['naive_step_s']:.0f} ms vs JVP step {1e3 * naive['jvp_step_s']:.0f} ms; "
          f"at {args.model} θ2={args.split} with {args.classes} classes: "
          f"{naive['extrapolated_bytes_per_image']['bytes'] / 1e6:.0f} MB per image "
          f"(JVP step holds {memory['gradfeat (func)'] / 2**20 / args.batch_size:.2f} MB per image)")
    report = {
        "config": vars(args) | {"device": str(device), "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "memory_measure": mem_kind},
        "steps": rows,
        "naive": naive,
    }
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
