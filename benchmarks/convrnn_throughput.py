"""Training-step throughput of the ConvRNNs and the fraction of the machine's peak they reach.

    python -m benchmarks.convrnn_throughput [--rounds 3] [--device auto|cpu|cuda] [--threads N]
    python -m benchmarks.convrnn_throughput --params   # parameter counts, ours and released

Measured in one run, interleaved round by round so that drift in the machine's load
hits every figure alike (each figure is the best round):

- `peak`: GFLOP/s of one large 3x3 convolution, forward and backward (input and
  weight gradients), the practical peak of a training step;
- `convrnn_glyph` at 1x28x28, batch 20, 20 classes (the glyph demo's set-up), with
  `conv4` (the Leap paper's Omniglot convnet) beside it: `glyph_over_conv4` is the
  ratio of their SGD step times (target: at most 1.5);
- `rgc_intermediate` at 3x64x64, batch 8 (the median model, 17 steps, biological
  unrolling), with `rgc_intermediate_port` beside it: the same model, on the same
  weights, computed as the released model computes it (`benchmarks.reference_port`):
  `port_over_rgc_intermediate` is the ratio of their step times (target: at least 1.5).

A step is forward, cross-entropy, backward and an SGD update. Its FLOPs are counted
with torch.utils.flop_counter (convolutions and matrix products, forward and
backward), whose convolution-backward formula is replaced by `conv_backward_flops`:
torch's counts the weight gradient of a grouped convolution without dividing by the
groups, so a depthwise convolution's weight gradient counted C times too many FLOPs.
`peak_fraction` = achieved GFLOP/s / peak GFLOP/s. Models and inputs are
in channels_last layout. On CUDA the models are compiled with torch.compile and the
batches are larger. The machine's 1-minute load average is recorded at the start and
the end: on a shared CPU, other processes' load slows a model made of many small
operations (the ConvRNNs) more than one made of a few large ones, and with several
threads most (their barriers wait for descheduled threads): on a shared machine,
`--threads 1` gives the steadier ratios. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop, conv_flop_count

import models
from models.convrnn import ConvRNN

Step = Callable[[], None]


def machine(device: torch.device) -> dict[str, Any]:
    """The machine and library versions, for the JSON record."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Step, repeats: int, device: torch.device) -> float:
    """Seconds per call of `fn`, averaged over `repeats` calls."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    output_padding: Any,
    groups: int,
    output_mask: list[bool],
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of `aten.convolution_backward`: the input gradient and the weight gradient
    each cost what the forward convolution costs, 2 B H_out W_out C_out (C_in / groups)
    k_h k_w. (torch's formula counts the weight gradient without the 1 / groups.)"""
    if transposed:
        return int(
            conv_backward_flop(
                grad_out_shape,
                x_shape,
                w_shape,
                bias,
                stride,
                padding,
                dilation,
                transposed,
                output_padding,
                groups,
                output_mask,
                out_shape,
            )
        )
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape))
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


FLOP_FORMULAS = {torch.ops.aten.convolution_backward: conv_backward_flops}


def count_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of `fn()` as torch's counter counts them, with grouped convolutions'
    backward counted right."""
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        fn()
    return float(counter.get_total_flops())


def peak_case(device: torch.device) -> tuple[Step, float, dict[str, Any]]:
    """A large 3x3 convolution, forward and backward (input and weight gradients): the
    practical peak of a training step on the device."""
    batch, channels, size = (16, 256, 28) if device.type == "cpu" else (128, 512, 28)
    x = torch.randn(batch, channels, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    x.requires_grad_(True)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device)
    conv = conv.to(memory_format=torch.channels_last)
    flops = 3 * 2.0 * batch * size * size * channels * channels * 9

    def run() -> None:
        conv(x).sum().backward()

    config = {
        "batch": batch,
        "channels": channels,
        "size": size,
        "kernel": 3,
        "passes": "forward + backward (input and weight gradients)",
    }
    return run, flops, config


def training_step(model: nn.Module, x: Tensor, y: Tensor, compile_model: bool) -> Step:
    """One SGD step (lr 0.1) of `model` on (x, y)."""
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), y).backward()
        optimizer.step()

    return run


def step_flops(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """FLOPs of one forward + backward pass (convolutions and matrix products)."""
    flops = count_flops(lambda: F.cross_entropy(model(x), y).backward())
    model.zero_grad(set_to_none=True)
    return flops


def model_case(
    name: str,
    shape: tuple[int, int, int],
    classes: int,
    batch: int,
    device: torch.device,
    compile_model: bool,
) -> tuple[Step, float, dict[str, Any]]:
    """A training step of the named model, its FLOPs, and its description."""
    torch.manual_seed(0)
    model = models.build(name, shape, classes).to(device).to(memory_format=torch.channels_last)
    return step_case(model, shape, classes, batch, device, compile_model)


def step_case(
    forward: nn.Module,
    shape: tuple[int, int, int],
    classes: int,
    batch: int,
    device: torch.device,
    compile_model: bool,
) -> tuple[Step, float, dict[str, Any]]:
    """A training step of `forward` on a random batch, its FLOPs, and its description."""
    x = torch.rand(batch, *shape, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)
    flops = step_flops(forward, x, y)
    info = {
        "input": list(shape),
        "batch": batch,
        "classes": classes,
        "params": sum(p.numel() for p in forward.parameters()),
        "gflop_per_step": flops / 1e9,
    }
    return training_step(forward, x, y, compile_model), flops, info


def port_case(batch: int, device: torch.device) -> tuple[Step, float, dict[str, Any]]:
    """A training step of `rgc_intermediate` computed by the reference port, on the weights
    `model_case` draws for it (the same seed)."""
    from benchmarks.reference_port import ReferencePort

    shape, classes = (3, 64, 64), 1000
    torch.manual_seed(0)
    model = models.build("rgc_intermediate", shape, classes)
    assert isinstance(model, ConvRNN)
    port = ReferencePort(model.to(device).to(memory_format=torch.channels_last))
    return step_case(port, shape, classes, batch, device, device.type == "cuda")


def print_parameter_counts() -> dict[str, Any]:
    """Every named ConvRNN's parameter count (at its reference input and output size)
    beside the released model's, as a table and a JSON line."""
    from models.convrnn_configs import parameter_counts

    counts = parameter_counts()
    for name, count in counts.items():
        released = count["published"]
        shown = "-" if released is None else f"{released:,d}"
        print(f"{name:24s} {count['params']:>12,d}  released {shown}")
    record = {"benchmark": "convrnn_parameter_counts", "models": counts}
    print(json.dumps(record))
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (best kept)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument(
        "--params",
        action="store_true",
        help="only print every named configuration's parameter count beside the released one",
    )
    args = parser.parse_args(argv)
    if args.params:
        return print_parameter_counts()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before = machine(torch.device("cpu"))["load_average_1min"]
    name = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    device = torch.device(name)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cudnn.benchmark = True

    cases: dict[str, tuple[Step, float, dict[str, Any]]] = {"peak": peak_case(device)}
    glyph_batch = 20
    rgc_batch = 64 if on_gpu else 8
    cases["convrnn_glyph"] = model_case(
        "convrnn_glyph", (1, 28, 28), 20, glyph_batch, device, on_gpu
    )
    cases["conv4"] = model_case("conv4", (1, 28, 28), 20, glyph_batch, device, on_gpu)
    cases["rgc_intermediate"] = model_case(
        "rgc_intermediate", (3, 64, 64), 1000, rgc_batch, device, on_gpu
    )
    cases["rgc_intermediate_port"] = port_case(rgc_batch, device)
    repeats = {
        "peak": 3,
        "convrnn_glyph": 10,
        "conv4": 10,
        "rgc_intermediate": 1,
        "rgc_intermediate_port": 1,
    }
    if on_gpu:
        repeats = {key: value * 5 for key, value in repeats.items()}

    for run, _, _ in cases.values():  # warm-up (and compilation on CUDA)
        run()
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(args.rounds):
        for key, (run, _, _) in cases.items():
            best[key] = min(best[key], timed(run, repeats[key], device))

    peak_flops = cases["peak"][1] / best["peak"]
    results: dict[str, Any] = {}
    for key, (_, flops, info) in cases.items():
        if key == "peak":
            continue
        achieved = flops / best[key]
        results[key] = {
            **info,
            "step_ms": best[key] * 1e3,
            "images_per_s": info["batch"] / best[key],
            "achieved_gflops": achieved / 1e9,
            "peak_fraction": achieved / peak_flops,
        }
    glyph_over_conv4 = best["convrnn_glyph"] / best["conv4"]
    port_over_rgc = best["rgc_intermediate_port"] / best["rgc_intermediate"]
    record = {
        "benchmark": "convrnn_throughput",
        "machine": {**machine(device), "load_average_1min_at_start": load_before},
        "config": {
            "rounds": args.rounds,
            "repeats": repeats,
            "channels_last": True,
            "compiled": on_gpu,
            "optimizer": "SGD lr 0.1",
            "peak": cases["peak"][2],
        },
        "peak_gflops": peak_flops / 1e9,
        "models": results,
        "glyph_over_conv4": glyph_over_conv4,
        "port_over_rgc_intermediate": port_over_rgc,
        "targets": {
            "glyph_over_conv4_at_most_1.5": glyph_over_conv4 <= 1.5,
            "port_over_rgc_intermediate_at_least_1.5": port_over_rgc >= 1.5,
        },
    }
    for key, value in results.items():
        print(
            f"{key:18s} {value['images_per_s']:9.1f} images/s  step {value['step_ms']:8.2f} ms  "
            f"{value['achieved_gflops']:7.2f} GFLOP/s  peak fraction {value['peak_fraction']:.3f}"
        )
    print(
        f"peak (3x3 conv)    {peak_flops / 1e9:.1f} GFLOP/s; glyph/conv4 step time "
        f"{record['glyph_over_conv4']:.2f} (target <= 1.5); reference port / rgc_intermediate "
        f"step time {record['port_over_rgc_intermediate']:.2f} (target >= 1.5)"
    )
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
