"""Benchmark: fp32 against bf16 autocast (train.precision) on this CPU, eager and compiled (train.compile).

    python benchmarks/cpu_precision.py [--preset tiny] [--size 28] [--rounds 15] [--threads 2]

The work that dominates the own-data benchmark, side by side in one process: the UNet's forward pass without
gradients at batch 64 (32 images sampled with classifier-free guidance are one batch of 64) and one training
step at batch 32 (forward, squared-error loss, backward, AdamW), in fp32 and under torch.autocast(bf16), each
eager and behind torch.compile. The variants take turns, one timed call each per round, so load on a shared
machine hits them alike; medians over --rounds. Also the relative difference of the bf16 forward from the fp32
one on the same input (weights perturbed away from the zero-initialised output layer), and whether the CPU
has bf16 instructions (kacdist.train.device.cpu_bf16_native: avx512_bf16 or AMX; without them autocast is
emulated). Writes benchmarks/results/cpu_precision.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from kacdist.models.presets import get_preset
from kacdist.models.unet import build_unet
from kacdist.track.provenance import cpu_model
from kacdist.train.device import autocast, cpu_bf16_native

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_preset(args.preset, image_size=args.size)
    net = build_unet(cfg)
    with torch.no_grad():
        for p in net.parameters():  # away from the zero-initialised output layer, so outputs can be compared
            p.add_(torch.randn_like(p) * 0.02)
    compiled = torch.compile(net)
    shape = (cfg.in_channels, args.size, args.size)

    def inputs(batch: int):
        y = torch.randint(0, cfg.num_classes, (batch,)) if cfg.num_classes else None
        return torch.randn(batch, *shape), torch.rand(batch), y

    fwd_in, train_in = inputs(64), inputs(32)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-6)  # compiled shares the parameters of net

    def forward(model, dtype):
        def call():
            with torch.no_grad(), autocast(torch.device("cpu"), dtype):
                return model(*fwd_in)
        return call

    def train_step(model, dtype):
        def call():
            with autocast(torch.device("cpu"), dtype):
                loss = model(*train_in).float().pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return call

    variants = {}
    for work, make, batch in (("forward", forward, 64), ("train step", train_step, 32)):
        for mode, model in (("eager", net), ("compiled", compiled)):
            for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                variants[(work, mode, precision)] = (make(model, dtype), batch)
    started = time.perf_counter()
    net.eval()  # no dropout in tiny; eval keeps compiled graphs to one per work
    for call, _ in variants.values():  # compile and warm up every variant before any timing
        for _ in range(3):
            call()
    times = {key: [] for key in variants}
    for _ in range(args.rounds):
        for key, (call, _) in variants.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    with torch.no_grad():
        ref = net(*fwd_in)
        with autocast(torch.device("cpu"), torch.bfloat16):
            low = net(*fwd_in)
    rel = ((low - ref).norm() / ref.norm()).item()

    rows = []
    for (work, mode, precision), (_, batch) in variants.items():
        median = statistics.median(times[(work, mode, precision)])
        base = statistics.median(times[(work, "eager", "fp32")])
        rows.append({"work": work, "mode": mode, "precision": precision, "batch": batch, "ms": median * 1e3,
                     "images_per_s": batch / median, "speedup_vs_eager_fp32": base / median})
    native = cpu_bf16_native()
    lines = [f"{args.preset} UNet at {args.size}x{args.size}, {args.threads} threads, {cpu_model()}, bf16 instructions: "
             f"{'yes' if native else 'no (emulated)'}; torch {torch.__version__}; medians of {args.rounds} interleaved "
             f"rounds; bf16 forward differs from fp32 by {rel:.2e} (relative L2). Wall {time.perf_counter() - started:.0f} s "
             "including compilation.", "",
             "| work | batch | mode | precision | ms | images/s | vs eager fp32 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['work']} | {r['batch']} | {r['mode']} | {r['precision']} | {r['ms']:.1f} | {r['images_per_s']:.0f} "
                     f"| {r['speedup_vs_eager_fp32']:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_precision.md").write_text(text)
    (RESULTS / "cpu_precision.json").write_text(json.dumps(
        {"rows": rows, "bf16_relative_difference": rel, "bf16_native": native, "cpu": cpu_model(),
         "preset": args.preset, "size": args.size, "threads": args.threads, "rounds": args.rounds}, indent=1))


if __name__ == "__main__":
    main()
