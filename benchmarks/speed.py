"""Cost of one training step: linear probe vs fine-tuning θ2 vs gradfeat (each engine).

The timed steps are lean: forward (the frozen θ1 forward included) and backward
of the loss, gradients cleared outside the timed region, no optimiser step and no
measuring hooks. Steps are timed interleaved in one process (A B C ... A B C ...);
the table gives each method's median step time and the median over rounds of its
ratio to the fine-tuning step of the same round, with the range of those ratios.

Beside the ratio stands the conv-FLOP bound (fvcore counts the convolutions and
linear layers): θ1 runs forward once on both sides; per θ2 layer fine-tuning
pays forward, weight gradient and (where its input depends on θ2) input gradient,
gradfeat pays primal, tangent of the weight, weight gradient and (where its input
carries a tangent) tangent of the input and its gradient: 3 vs 5 conv-equivalents
inside θ2, 2 vs 3 at its boundary.

Memory is measured in a separate, untimed pass: on CUDA
``torch.cuda.max_memory_allocated`` over the step; on CPU, which has no allocator
counter, the bytes autograd saves for backward (deduplicated by storage) plus the
trainable parameters and their gradients: the part of a step's peak that differs
between the methods.

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
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torch.func import functional_call, jacrev, vmap
from torch.nn import functional as F

from gradfeat_plugin import linearize
from gradfeat_plugin.backbones.bigan import BiGANEncoder
from gradfeat_plugin.protocols import SplitNetwork


FORWARD_MODE_ENGINES = ("dual", "func")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


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


class Step:
    """One lean training step and the parameters whose gradients it fills."""

    def __init__(self, run: Callable[[], None], params: list[nn.Parameter]) -> None:
        self.run, self.params = run, params

    def clear(self) -> None:
        for p in self.params:
            p.grad = None

    def timed(self, device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
        self.clear()
        _sync(device)
        start = clock()
        self.run()
        _sync(device)
        return clock() - start

    def memory(self, device: torch.device) -> int:
        """Peak CUDA bytes of the step, or the CPU proxy (see the module docstring)."""
        self.clear()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            self.run()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base
        with SavedTensorMeter().record() as meter:
            self.run()
        return meter.bytes + trainable_bytes(self.params)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def linear_step(lin, x, y) -> Step:
    def run() -> None:
        with torch.no_grad():
            f = lin.activations_from_prefix(lin.forward_prefix(x))
        F.cross_entropy(lin.head(f), y).backward()

    return Step(run, list(lin.head.parameters()))


def gradfeat_step(lin, x, y) -> Step:
    def run() -> None:
        F.cross_entropy(lin(x), y).backward()

    return Step(run, [p for p in lin.parameters() if p.requires_grad])


def finetune_step(model, split, x, y, num_classes) -> Step:
    network = SplitNetwork(model, split).to(x.device).eval()
    head = nn.Linear(model.num_features, num_classes).to(x)

    def run() -> None:
        with torch.no_grad():
            boundary = network.forward_prefix(x)
        F.cross_entropy(head(network.forward_suffix(boundary)), y).backward()

    return Step(run, network.theta2() + list(head.parameters()))


def _under(name: str, split: list[str]) -> bool:
    return any(name == s or name.startswith(s + ".") for s in split)


def flop_bound(model: nn.Module, split: list[str], x: torch.Tensor) -> dict:
    """The conv-FLOP bound of the gradfeat / fine-tuning step ratio (see the docstring).

    fvcore counts each convolution and linear layer of one forward; a θ2 layer's
    input depends on θ2 (carries a tangent, needs an input gradient) when
    ``requires_grad`` reaches it with only θ2's parameters requiring it.
    """
    model = model.eval()
    counts = FlopCountAnalysis(model, x[:1])
    counts.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_module = counts.by_module_and_operator()
    layers = {
        name: sum(v for op, v in by_module.get(name, {}).items()
                  if op in ("conv", "linear", "addmm", "matmul", "bmm", "einsum"))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    }
    depends: dict[str, bool] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, name=name: depends.__setitem__(name, bool(args[0].requires_grad))
        )
        for name, m in model.named_modules() if name in layers and _under(name, split)
    ]
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(_under(n, split))
        with torch.enable_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
    prefix = sum(v for n, v in layers.items() if not _under(n, split))
    inner = sum(v for n, v in layers.items() if depends.get(n))
    boundary = sum(v for n, v in layers.items() if _under(n, split) and not depends.get(n))
    finetune = prefix + 3 * inner + 2 * boundary
    gradfeat = prefix + 5 * inner + 3 * boundary
    theta2 = inner + boundary
    return {
        "prefix_flops": prefix,
        "theta2_flops": theta2,
        "theta2_boundary_flops": boundary,
        "prefix_share_of_finetune": prefix / finetune,
        "bound": gradfeat / finetune,
        "bound_5_vs_3": (prefix + 5 * theta2) / (prefix + 3 * theta2),
    }


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
    step = gradfeat_step(lin, x, y)
    step.timed(device)
    jvp_s, jvp_bytes = step.timed(device), step.memory(device)
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
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or the process's CPU time (steadier on a shared "
                        "CPU; use it with one thread)")
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

    steps: dict[str, Step] = {}
    steps["finetune θ2"] = finetune_step(
        timm.create_model(args.model, num_classes=0).to(device).eval(),
        args.split, x, y, args.classes,
    )
    # The forward-mode engines; the others are fallbacks for ops these cannot run.
    for engine in FORWARD_MODE_ENGINES:
        lin = linearize(model, split=args.split, engine=engine, num_classes=args.classes).to(device)
        if "linear probe" not in steps:
            steps["linear probe"] = linear_step(lin, x, y)
        steps[f"gradfeat ({engine})"] = gradfeat_step(lin, x, y)

    times: dict[str, list[float]] = {k: [] for k in steps}
    for round_ in range(args.warmup + args.rounds):
        for name, step in steps.items():
            seconds = step.timed(device, CLOCKS[args.clock])
            if round_ >= args.warmup:
                times[name].append(seconds)
    memory = {name: step.memory(device) for name, step in steps.items()}
    bound = flop_bound(model, args.split, x)

    ref = "finetune θ2"
    rows = []
    for name in steps:
        ratios = [a / b for a, b in zip(times[name], times[ref])]
        rows.append({
            "method": name,
            "median_step_ms": 1e3 * statistics.median(times[name]),
            "time_ratio_vs_finetune": statistics.median(ratios),
            "time_ratio_range": [min(ratios), max(ratios)],
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
    mem_kind += ", measured in a separate untimed pass"
    print(f"{args.model}, θ2={args.split}, {args.image_size}x{args.image_size}, batch "
          f"{args.batch_size}, {device.type}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds, {args.clock} clock")
    print(f"{'method':<24}{'median ms':>10}{'x finetune':>11}{'pairs':>12}"
          f"{'memory MB':>11}{'x finetune':>11}")
    for r in rows:
        low, high = r["time_ratio_range"]
        print(f"{r['method']:<24}{r['median_step_ms']:>10.1f}{r['time_ratio_vs_finetune']:>11.2f}"
              f"{f'{low:.2f}-{high:.2f}':>12}{r['memory_mb']:>11.1f}"
              f"{r['memory_ratio_vs_finetune']:>11.2f}")
    print(f"conv-FLOP bound of gradfeat / finetune: {bound['bound']:.3f} (θ1 forward "
          f"{bound['prefix_share_of_finetune']:.0%} of the fine-tuning step; 5 vs 3 "
          f"conv-equivalents throughout θ2: {bound['bound_5_vs_3']:.3f})")
    print(f"memory: {mem_kind}")
    print(f"naive per-sample features ω̄ᵀJ: {naive['case']}: "
          f"{naive['naive_bytes_per_image'] / 2**20:.2f} MB per image, step "
          f"{1e3 * naive['naive_step_s']:.0f} ms vs JVP step {1e3 * naive['jvp_step_s']:.0f} ms; "
          f"at {args.model} θ2={args.split} with {args.classes} classes: "
          f"{naive['extrapolated_bytes_per_image']['bytes'] / 1e6:.0f} MB per image "
          f"(JVP step holds {memory['gradfeat (dual)'] / 2**20 / args.batch_size:.2f} MB per image)")
    report = {
        "config": vars(args) | {"device": str(device), "threads": torch.get_num_threads(),
                                "torch": torch.__version__, "memory_measure": mem_kind},
        "steps": rows,
        "flop_bound": bound,
        "naive": naive,
    }
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=2)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
