"""Data-loading throughput: WebDataset shards through kacdist's training stream vs a per-file PIL loader.

Run from the repository root: ``python benchmarks/data_loader.py`` (about 1-2 minutes on 2 cores).

For each configuration (32x32 PNG, 64x64 JPEG, 256x256 WebP, 256x256 JPEG) the same encoded images are
written once as tar shards and once as one file per image. Both loaders then run in a single process
with one torch thread -- "per worker" throughput, since DataLoader workers scale it roughly linearly up to
the number of free cores -- and do the same work per image: full decode to RGB, random horizontal flip,
conversion to float in [-1, 1], batches of 64. The shard side is ``make_train_stream`` (shuffle buffer
1000, flips); the folder side is a map-style Dataset opening each file with PIL under a shuffling
DataLoader, the usual ImageFolder pattern. Each measurement is repeated (default 5) after one warm-up
pass and the median reported, so both read from a warm page cache: the ratio isolates per-file overhead
(open/stat/small reads) and pipeline cost, not disk or network latency, which only favour shards further.

Rates are reported per CPU-second of the loading process (user + system time), which is what one worker
on a core of its own delivers and is robust to other jobs sharing the machine; wall-clock rates are
reported beside them and equal the CPU rates only on an otherwise idle machine.

The workers needed for a training job follow from the per-worker rate and an assumed GPU consumption
(default: 4 GPUs x 100 img/s for an ADM-size LSUN-256 UNet; an assumption, not a measurement -- pass your
own with --gpus / --gpu-images-per-second).

Writes the table to stdout and the numbers to benchmarks/results/data_loader.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL
import skimage.data
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from kacdist.data import make_train_stream  # noqa: E402
from kacdist.data.imaging import encode_image  # noqa: E402
from kacdist.data.shards import ShardSample, shard_file_name, write_shard  # noqa: E402
from kacdist.track.provenance import cpu_model  # noqa: E402

BATCH_SIZE = 64
RESULTS_PATH = REPO_ROOT / "benchmarks" / "results" / "data_loader.json"


@dataclass(frozen=True)
class Configuration:
    name: str
    resolution: int
    image_format: str
    quality: int
    num_images: int


CONFIGURATIONS = (
    Configuration("32px PNG", 32, "png", 95, 4096),
    Configuration("64px JPEG q95", 64, "jpg", 95, 2048),
    Configuration("256px WebP q90", 256, "webp", 90, 384),
    Configuration("256px JPEG q95", 256, "jpg", 95, 384),
)


@dataclass(frozen=True)
class Rate:
    """One timed pass: images per CPU-second of this process and per wall-clock second."""

    per_cpu_s: float
    per_wall_s: float


@dataclass
class Measurement:
    configuration: str
    num_images: int
    mean_bytes_per_image: float
    shard_images_per_cpu_s: float
    folder_images_per_cpu_s: float
    shard_over_folder: float
    shard_images_per_wall_s: float
    folder_images_per_wall_s: float
    shard_runs: list[Rate]
    folder_runs: list[Rate]


def source_photos() -> list[np.ndarray]:
    return [
        skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket(),
        skimage.data.immunohistochemistry(), skimage.data.hubble_deep_field(), skimage.data.colorwheel(),
    ]


def make_images(configuration: Configuration, photos: list[np.ndarray], seed: int) -> list[bytes]:
    """Random square crops of the photos (at least the target size), BOX-resized and encoded."""
    rng = np.random.default_rng(seed)
    encoded = []
    for index in range(configuration.num_images):
        photo = photos[index % len(photos)]
        height, width = photo.shape[:2]
        side = int(rng.integers(configuration.resolution, min(height, width) + 1))
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        image = crop.resize((configuration.resolution,) * 2, resample=Image.Resampling.BOX)
        encoded.append(encode_image(image, configuration.image_format, configuration.quality))
    return encoded


def write_both_layouts(images: list[bytes], configuration: Configuration, directory: Path) -> tuple[str, Path]:
    """Four shards and a flat folder holding the same bytes; returns (shard glob, folder)."""
    shard_dir, folder = directory / "shards", directory / "folder"
    folder.mkdir(parents=True)
    per_shard = math.ceil(len(images) / 4)
    for shard_index, start in enumerate(range(0, len(images), per_shard)):
        samples = [
            ShardSample(key=f"img{index:06d}", image_format=configuration.image_format, image=data, label=index % 10)
            for index, data in enumerate(images[start : start + per_shard], start=start)
        ]
        write_shard(shard_dir / shard_file_name("train", shard_index), samples)
    for index, data in enumerate(images):
        (folder / f"img{index:06d}.{configuration.image_format}").write_bytes(data)
    return str(shard_dir / "train-*.tar"), folder


class PerFileImageDataset(Dataset):
    """The baseline: one PIL open per file, per-sample tensor conversion, like torchvision's ImageFolder."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.paths = sorted(folder.iterdir())
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            pixels = np.array(image.convert("RGB"))
        if self.rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return tensor, index % 10


def timed_pass(batches: Iterable[tuple]) -> Rate:
    wall, cpu = time.perf_counter(), time.process_time()
    count = sum(batch[0].shape[0] for batch in batches)
    return Rate(per_cpu_s=count / (time.process_time() - cpu), per_wall_s=count / (time.perf_counter() - wall))


def time_shards(pattern: str, num_images: int) -> Rate:
    batches = num_images // BATCH_SIZE
    stream = make_train_stream(pattern, BATCH_SIZE, seed=0, hflip=True, shuffle_buffer=1000, batches_per_epoch=batches)
    return timed_pass(stream)


def time_folder(folder: Path, num_images: int) -> Rate:
    dataset = PerFileImageDataset(folder, seed=0)
    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=0, drop_last=True)
    return timed_pass(loader)


def measure(configuration: Configuration, photos: list[np.ndarray], repeats: int, work_dir: Path) -> Measurement:
    images = make_images(configuration, photos, seed=configuration.resolution)
    pattern, folder = write_both_layouts(images, configuration, work_dir / configuration.name.replace(" ", "_"))
    time_shards(pattern, configuration.num_images)
    time_folder(folder, configuration.num_images)
    shard_runs, folder_runs = [], []
    for _ in range(repeats):
        shard_runs.append(time_shards(pattern, configuration.num_images))
        folder_runs.append(time_folder(folder, configuration.num_images))
    shard_cpu = statistics.median(run.per_cpu_s for run in shard_runs)
    folder_cpu = statistics.median(run.per_cpu_s for run in folder_runs)
    return Measurement(
        configuration=configuration.name,
        num_images=configuration.num_images,
        mean_bytes_per_image=sum(map(len, images)) / len(images),
        shard_images_per_cpu_s=shard_cpu,
        folder_images_per_cpu_s=folder_cpu,
        shard_over_folder=shard_cpu / folder_cpu,
        shard_images_per_wall_s=statistics.median(run.per_wall_s for run in shard_runs),
        folder_images_per_wall_s=statistics.median(run.per_wall_s for run in folder_runs),
        shard_runs=shard_runs,
        folder_runs=folder_runs,
    )


SIZING_GPU_RATES = (50.0, 100.0, 200.0, 400.0)
"""Per-GPU training throughputs (img/s) for the sizing table; 100 is the headline assumption."""


def workers_per_gpu(images_per_s_per_worker: float, gpu_images_per_s: float, headroom: float) -> int:
    """Loading workers each rank needs so its GPU never waits: demand x headroom / per-worker rate, rounded up.

    Per GPU, because every rank runs its own DataLoader: a rank cannot borrow another rank's workers.
    """
    return math.ceil(gpu_images_per_s * headroom / images_per_s_per_worker)


def format_sizing(
    measurements: list[Measurement], gpus: int, headline_rate: float, headroom: float
) -> tuple[str, dict[str, dict[str, int]]]:
    rates = sorted(set(SIZING_GPU_RATES) | {headline_rate})
    header = "| shards | " + " | ".join(f"{rate:g} img/s per GPU" for rate in rates) + " |"
    lines = [header, "|---|" + "---:|" * len(rates)]
    numbers: dict[str, dict[str, int]] = {}
    for item in measurements:
        if not item.configuration.startswith("256px"):
            continue
        per_gpu = {f"{rate:g}": workers_per_gpu(item.shard_images_per_cpu_s, rate, headroom) for rate in rates}
        numbers[item.configuration] = per_gpu
        cells = " | ".join(f"{count} per GPU = {count * gpus} total" for count in per_gpu.values())
        lines.append(f"| {item.configuration} | {cells} |")
    return "\n".join(lines), numbers


def format_table(measurements: list[Measurement]) -> str:
    lines = [
        "| configuration | images | KB/image | shards img/s per worker | per-file PIL img/s per worker "
        "| shards / per-file | shards wall img/s | per-file wall img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in measurements:
        lines.append(
            f"| {item.configuration} | {item.num_images} | {item.mean_bytes_per_image / 1024:.1f} | "
            f"{item.shard_images_per_cpu_s:,.0f} | {item.folder_images_per_cpu_s:,.0f} | "
            f"{item.shard_over_folder:.2f}x | "
            f"{item.shard_images_per_wall_s:,.0f} | {item.folder_images_per_wall_s:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per loader and configuration (median)")
    parser.add_argument("--gpus", type=int, default=4, help="GPUs in the sizing example (default 4)")
    parser.add_argument(
        "--gpu-images-per-second", type=float, default=100.0,
        help="ASSUMED training consumption per GPU for an ADM-size LSUN-256 UNet (default 100 img/s)",
    )
    parser.add_argument("--headroom", type=float, default=1.5, help="safety factor on the worker count (default 1.5)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results")
    parser.add_argument("--only", default=None, help="substring selecting configurations (e.g. 256px)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photos = source_photos()
    chosen = [item for item in CONFIGURATIONS if args.only is None or args.only in item.name]
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kacdist-loader-bench-") as work_dir:
        measurements = [measure(item, photos, args.repeats, Path(work_dir)) for item in chosen]
    table = format_table(measurements)
    print(table)
    sizing_table, sizing = format_sizing(measurements, args.gpus, args.gpu_images_per_second, args.headroom)
    if sizing:
        print(f"\nLSUN-256 on {args.gpus} GPUs: loading workers needed ({args.headroom:g}x headroom over the GPU rate)")
        print(sizing_table)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    print(f"total time {elapsed:.0f} s; 1-minute load average {load_before:.1f} before, {load_after:.1f} after")
    result = {
        "command": shlex.join(["python", "benchmarks/data_loader.py", *(sys.argv[1:] if argv is None else argv)]),
        "batch_size": BATCH_SIZE,
        "repeats": args.repeats,
        "statistic": "median over repeats of images per CPU-second (user+system) and per wall second of one loading "
        "process (torch threads = 1), warm page cache",
        "environment": {
            "cpu_count": os.cpu_count(),
            "processor": cpu_model(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pillow": PIL.__version__,
            "load_average_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        },
        "measurements": [asdict(item) for item in measurements],
        "sizing": {
            "assumption": f"{args.gpus} GPUs; headline {args.gpu_images_per_second:g} img/s per GPU for an ADM-size "
            "LSUN-256 UNet (assumed, not measured)",
            "headroom": args.headroom,
            "workers_per_gpu_by_gpu_rate": sizing,
        },
        "elapsed_s": round(elapsed, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
