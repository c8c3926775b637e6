"""Benchmark: FLOPs per image of every UNet preset, and what they mean in H100 time for the paper's schedules.

    python benchmarks/flops.py [--peak-tflops 989] [--mfu 0.4] [--gpus 16] [--presets tiny cifar10 ...]

For each preset in kacdist.models.presets.PRESETS, at its own resolution and in training mode (dropout on):

* the parameter count (sum of numel);
* FLOPs of one forward pass, and of one training step (forward, MSE loss against a random target,
  backward), counted by torch.utils.flop_counter.FlopCounterMode at batch 1 and again at batch 2; the script
  stops if the two per-image counts differ, so the reported per-image numbers are exactly linear in the batch;
* the forward count against docs/models.md's "GMAC/img" column (read from that file): FlopCounterMode
  counts a multiply-add as 2 FLOPs, so forward FLOPs / (2 × GMAC) should be about 1. Only matrix products
  are counted (convolutions, linears, the two attention matmuls); GroupNorm, SiLU, softmax, the residual
  additions, biases and the optimiser step are not;
* images/s per GPU at a model FLOPs utilisation (--mfu, default 0.4) of a dense peak (--peak-tflops,
  default 989: the H100 SXM's dense bf16 tensor-core peak): mfu × peak / training FLOPs per image;
* for presets whose dataset config (configs/dataset/<name>.yaml, loaded with kacdist.config.load_config)
  sets train.total_kimg — cifar10, celeba64 and lsun_bedroom256 — the wall time of that whole schedule
  on --gpus GPUs (default 16, i.e. 4 nodes × 4 H100) at that rate, and the images per GPU per step
  (global batch / GPUs).

Counting runs on the "meta" device: the model is built under ``torch.device("meta")``, so tensors carry
shapes but no data, and even lsun_bedroom256 (552.8M parameters, 256²) costs no real compute or memory.
The attention matmuls are counted because F.scaled_dot_product_attention takes its math path (two bmm calls)
on meta, and also on CPU for this UNet's 3-D (B·heads, T, ch) layout. Beware that with 4-D (B, heads, T, ch)
CPU tensors torch 2.13 picks the fused ``_scaled_dot_product_flash_attention_for_cpu`` kernel, which
FlopCounterMode has no formula for, so attention silently counts as 0. As a guard, the --cpu-check presets
(default tiny) are also counted on real CPU tensors at batch 1, with the default and with the math SDPA
backend; the script stops unless both equal the meta count.

What to expect: train / forward is just under 3 (the backward of a layer costs twice its forward: gradients
of the input and of the weights), short only by the input gradients nobody needs, those of the first
convolution and of the first time-embedding linear. Forward / (2 × docs GMAC) is 1.000 ± 0.001 for the paper
presets; tiny reads 1.04 only because the docs round its 0.052 GMAC to 0.05.

Model FLOPs, not hardware FLOPs: with model.use_checkpoint=True the GPU recomputes the forward pass in the
backward (about 4× forward in all), but utilisation is quoted against the 3× model count, as usual.

Writes benchmarks/results/flops.{json,md}. Run time on the project's 2-core VM: about 16 s wall clock (14 s
measured inside the script and written to the results, the rest importing torch and kacdist).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from kacdist.config import load_config
from kacdist.models.presets import PRESETS, get_preset
from kacdist.models.unet import UNetConfig, build_unet

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "models.md"
DATASET_CONFIGS = ROOT / "configs" / "dataset"
# preset -> the dataset config that trains it with the paper's schedule (Table B-1)
SCHEDULES = {"cifar10": "cifar10", "celeba64": "celeba64", "lsun_bedroom256": "lsun_bedroom256"}


def count_flops(model: nn.Module, args: tuple) -> tuple[int, int]:
    """(forward FLOPs, training-step FLOPs) of ``model(*args)`` for the whole batch in ``args``.

    The forward pass is counted under no_grad; the training step is forward + MSE against a random target
    of the output's shape + backward. A multiply-add counts as 2 FLOPs (FlopCounterMode's convention).
    """
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        out = model(*args)
        F.mse_loss(out, torch.randn_like(out)).backward()
    train = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    return forward, train


def unet_inputs(cfg: UNetConfig, batch: int, device: str | torch.device) -> tuple:
    """Random (x, t, y) for ``cfg``: y is None for an unconditional preset."""
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device) if cfg.num_classes is not None else None
    return x, t, y


def build(cfg: UNetConfig, device: str | torch.device) -> nn.Module:
    with torch.device(device):
        model = build_unet(cfg)
    return model.train()  # dropout on, as in training (it adds no counted FLOPs)


def preset_flops(name: str, device: str | torch.device = "meta", batches: tuple[int, ...] = (1, 2)) -> dict:
    """Parameters and per-image forward / training FLOPs of preset ``name``, counted at each batch size.

    Raises if the per-image counts differ between batch sizes (the count must be linear in the batch).
    """
    cfg = get_preset(name)
    model = build(cfg, device)
    per_image = {}
    for batch in batches:
        forward, train = count_flops(model, unet_inputs(cfg, batch, device))
        if forward % batch or train % batch:
            raise RuntimeError(f"{name}: batch {batch} counts {forward}, {train} are not multiples of the batch")
        per_image[batch] = (forward // batch, train // batch)
    if len(set(per_image.values())) != 1:
        raise RuntimeError(f"{name}: per-image FLOPs depend on the batch size: {per_image}")
    forward, train = per_image[batches[0]]
    return {
        "preset": name,
        "resolution": cfg.image_size,
        "channels": cfg.in_channels,
        "params": sum(p.numel() for p in model.parameters()),
        "forward_flops": forward,
        "train_flops": train,
        "batches_checked": list(batches),
    }


def cpu_check(name: str) -> dict:
    """Count ``name`` on real CPU tensors (batch 1), with the default and with the math SDPA backend."""
    torch.manual_seed(0)
    cfg = get_preset(name)
    model = build(cfg, "cpu")
    inputs = unet_inputs(cfg, 1, "cpu")
    default = count_flops(model, inputs)
    with sdpa_kernel(SDPBackend.MATH):
        math = count_flops(model, inputs)
    return {"default_sdpa": default, "math_sdpa": math}


def docs_gmac(path: Path = DOCS) -> dict[str, float]:
    """The "GMAC/img" column of the presets table in docs/models.md, by preset name ({} if not found)."""
    if not path.exists():
        return {}
    column, values = None, {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if column is None:
            if "GMAC/img" in cells and "preset" in cells:
                column = cells.index("GMAC/img")
            continue
        if not line.startswith("|"):
            break  # end of the table
        name = re.fullmatch(r"`(\w+)`", cells[0])
        if name and column < len(cells):
            try:
                values[name.group(1)] = float(cells[column].replace(",", ""))
            except ValueError:
                pass
    return values


def schedule(dataset: str) -> dict | None:
    """total_kimg and global batch of configs/dataset/<dataset>.yaml, or None if it sets no total_kimg."""
    raw = OmegaConf.load(DATASET_CONFIGS / f"{dataset}.yaml")
    if OmegaConf.select(raw, "train.total_kimg") is None:
        return None  # load_config would fill in the schema's default, which is no paper schedule
    cfg = load_config([f"dataset={dataset}"])
    return {
        "dataset_config": f"configs/dataset/{dataset}.yaml",
        "total_kimg": float(cfg.train.total_kimg),
        "batch_size": int(cfg.train.batch_size),
        "precision": getattr(cfg.train, "precision", None),
    }


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _fmt_gflop(flops: float) -> str:
    g = flops / 1e9
    return f"{g:.4g}" if g < 1 else f"{g:,.1f}"


def main() -> None:
    start = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense peak per GPU (H100 SXM bf16: 989)")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed")
    parser.add_argument("--gpus", type=int, default=16, help="GPUs for the schedule times (4 nodes x 4 H100)")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--cpu-check", nargs="*", default=["tiny"], choices=list(PRESETS),
                        help="presets also counted on real CPU tensors (batch 1) against the meta count")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rate = args.mfu * args.peak_tflops * 1e12  # sustained FLOP/s per GPU
    gmac = docs_gmac()

    rows = []
    for name in args.presets:
        t0 = time.perf_counter()
        row = preset_flops(name)
        row["train_over_forward"] = row["train_flops"] / row["forward_flops"]
        row["docs_gmac"] = gmac.get(name)
        row["forward_over_2x_docs_gmac"] = row["forward_flops"] / (2e9 * gmac[name]) if name in gmac else None
        row["img_per_s_per_gpu"] = rate / row["train_flops"]
        row["schedule"] = None
        if name in SCHEDULES and (sched := schedule(SCHEDULES[name])) is not None:
            images = sched["total_kimg"] * 1e3
            seconds = images / (row["img_per_s_per_gpu"] * args.gpus)
            sched.update(
                gpus=args.gpus,
                img_per_gpu_per_step=sched["batch_size"] / args.gpus,
                steps=images / sched["batch_size"],
                cluster_img_per_s=row["img_per_s_per_gpu"] * args.gpus,
                hours=seconds / 3600,
                days=seconds / 86400,
                total_train_flops=images * row["train_flops"],
            )
            row["schedule"] = sched
        row["count_seconds"] = time.perf_counter() - t0
        rows.append(row)
        print(
            f"{name:>16}: {_fmt_params(row['params']):>7} params, forward {_fmt_gflop(row['forward_flops'])} GFLOP/img, "
            f"train {_fmt_gflop(row['train_flops'])} GFLOP/img ({row['train_over_forward']:.4f}x), "
            f"{row['img_per_s_per_gpu']:,.0f} img/s/GPU ({row['count_seconds']:.1f} s)",
            flush=True,
        )

    meta_by_name = {r["preset"]: r for r in rows}
    checks = []
    for name in args.cpu_check or []:
        meta = meta_by_name.get(name) or preset_flops(name, batches=(1,))
        cpu = cpu_check(name)
        check = {
            "preset": name,
            "meta": [meta["forward_flops"], meta["train_flops"]],
            "cpu_math_sdpa": list(cpu["math_sdpa"]),
            "cpu_default_sdpa": list(cpu["default_sdpa"]),
        }
        check["cpu_equals_meta"] = check["cpu_math_sdpa"] == check["meta"] == check["cpu_default_sdpa"]
        if not check["cpu_equals_meta"]:
            raise RuntimeError(
                f"{name}: CPU counts (default SDPA {check['cpu_default_sdpa']}, math SDPA {check['cpu_math_sdpa']}) "
                f"differ from the meta count {check['meta']}: has the attention kernel choice changed?"
            )
        checks.append(check)
        print(f"{name:>16}: counts on real CPU tensors (default and math SDPA backends) equal the meta count", flush=True)

    elapsed = time.perf_counter() - start
    machine = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "count_device": "meta"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flops.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "peak_tflops": args.peak_tflops,
                "mfu": args.mfu,
                "gpus": args.gpus,
                "flops_convention": "FlopCounterMode: multiply-add = 2 FLOPs; matmuls and convolutions only",
                "rows": rows,
                "cpu_checks": checks,
                "seconds": elapsed,
            },
            indent=2,
        )
    )

    gpus = args.gpus
    lines = [
        f"FLOPs per image counted with torch.utils.flop_counter.FlopCounterMode on the meta device (torch "
        f"{machine['torch']}), training mode, batch 1 and 2 (per-image counts identical); a multiply-add is 2 "
        f"FLOPs, only matmuls and convolutions are counted. Train = forward + MSE + backward. Throughput: "
        f"{args.mfu:.0%} of {args.peak_tflops:g} TFLOP/s (H100 SXM dense bf16) per GPU; schedule times on {gpus} GPUs.",
        "",
        f"| preset | resolution | params | forward GFLOP/img | train (fwd+bwd) GFLOP/img | train/forward ratio | "
        f"forward FLOPs / (2 × docs GMAC) | img/s per H100 @ {args.mfu:.0%} | schedule (kimg) | time on {gpus} H100 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            f"{r['forward_over_2x_docs_gmac']:.3f} (docs {r['docs_gmac']:g} GMAC)"
            if r["forward_over_2x_docs_gmac"] is not None
            else "—"
        )
        s = r["schedule"]
        kimg = f"{s['total_kimg']:,.0f}" if s else "—"
        wall = f"{s['hours']:.1f} h ({s['days']:.2f} d)" if s else "—"
        lines.append(
            f"| {r['preset']} | {r['channels']}×{r['resolution']}² | {r['params']:,} | {_fmt_gflop(r['forward_flops'])} | "
            f"{_fmt_gflop(r['train_flops'])} | {r['train_over_forward']:.4f} | {ratio} | {r['img_per_s_per_gpu']:,.0f} | "
            f"{kimg} | {wall} |"
        )
    scheduled = [r for r in rows if r["schedule"]]
    if scheduled:
        lines += [
            "",
            f"Schedules (train.total_kimg and the global train.batch_size of each dataset config) on {gpus} GPUs:",
            "",
            "| preset | dataset config | total kimg | global batch | images / GPU / step | steps | cluster img/s | "
            "hours | days | total training FLOPs |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in scheduled:
            s = r["schedule"]
            lines.append(
                f"| {r['preset']} | `{s['dataset_config']}` | {s['total_kimg']:,.0f} | {s['batch_size']} | "
                f"{s['img_per_gpu_per_step']:g} | {s['steps']:,.0f} | {s['cluster_img_per_s']:,.0f} | {s['hours']:.1f} | "
                f"{s['days']:.2f} | {s['total_train_flops']:.3g} |"
            )
    for c in checks:
        lines += [
            "",
            f"CPU check ({c['preset']}, real tensors, batch 1): forward / train FLOPs {c['cpu_default_sdpa'][0]:,} / "
            f"{c['cpu_default_sdpa'][1]:,} with the default SDPA backend and with the math one, equal to the meta count.",
        ]
    lines += ["", f"Script run time: {elapsed:.1f} s."]
    (out / "flops.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
