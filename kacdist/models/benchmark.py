"""Training throughput of a UNet preset: images/s of one AdamW step (forward, MSE, backward, clip, step).

    python -m kacdist.models.benchmark tiny --batch 128 --steps 10 [--threads 2] [--set key=value ...]

Random inputs and targets stand in for the Kac training pair, so only the network is timed. The reported
figure is the median step time over ``--steps`` timed steps after ``--warmup`` untimed ones.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import time
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F

from .presets import get_preset
from .unet import UNetConfig, build_unet


@dataclass
class Throughput:
    preset: str
    params: int
    batch: int
    threads: int
    device: str
    precision: str
    step_s_median: float
    step_s_min: float
    step_times: List[float]

    @property
    def images_per_s(self) -> float:
        return self.batch / self.step_s_median

    def summary(self) -> str:
        return (
            f"{self.preset}: {self.params:,} parameters, batch {self.batch}, {self.device} {self.precision}, "
            f"{self.threads} thread(s): median step {self.step_s_median * 1e3:.0f} ms "
            f"(min {self.step_s_min * 1e3:.0f} ms) = {self.images_per_s:.0f} images/s"
        )


def measure_training_throughput(
    cfg: UNetConfig,
    batch: int = 128,
    steps: int = 10,
    warmup: int = 3,
    device: str = "cpu",
    bf16: bool = False,
    threads: Optional[int] = None,
    name: str = "custom",
    seed: int = 0,
) -> Throughput:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build_unet(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    x = torch.randn(shape, device=device)
    target = torch.randn(shape, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, cfg.num_classes + 1, (batch,), device=device) if cfg.num_classes else None

    def step() -> None:
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.mse_loss(model(x, t, y).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return Throughput(
        preset=name,
        params=sum(p.numel() for p in model.parameters()),
        batch=batch,
        threads=torch.get_num_threads(),
        device=device,
        precision="bf16-autocast" if bf16 else "fp32",
        step_s_median=statistics.median(times),
        step_s_min=min(times),
        step_times=times,
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0: torch's default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    cfg = get_preset(args.preset, **overrides)
    result = measure_training_throughput(
        cfg, args.batch, args.steps, args.warmup, args.device, args.bf16, args.threads or None, name=args.preset
    )
    print(result.summary())


if __name__ == "__main__":
    main()
