"""Score chosen stages of an existing own-data benchmark run with that benchmark's protocol, to compare variants
distilled beside the ladder (``distill.tag=<name>``) without training the teacher again.

    python benchmarks/own_data_stages.py --work <work of benchmarks/own_data.py> --out <name> STAGE [STAGE ...]

STAGE is a distillation stage directory of <work>/runs/own (e.g. distill-2-1, distill-4-1-g13from4), sampled
with Euler on its own grid at w = 1, or teacher:<steps>:<w> (AB-2). Same classifier recipe (seeded), same
reference, same per-image noise seeds and labels as benchmarks/own_data.py, so a stage scored here and by the
benchmark gives the same numbers. Prints a table and writes benchmarks/results/<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import own_data  # noqa: E402  (the benchmark's data and protocol)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("--out", required=True, help="results name under benchmarks/results/")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("stages", nargs="+")
    args = parser.parse_args()

    from kacdist.config import load_config
    from kacdist.eval.classifier import ClassifierSpec, train_classifier
    from kacdist.eval.stats import compute_stats
    from kacdist.kac import KacProcess
    from kacdist.stages.common import load_teacher
    from kacdist.train.device import autocast_dtype

    torch.set_num_threads(2)
    work = Path(args.work).resolve()
    cfg = load_config(["stage=eval", f"runs_dir={work / 'runs'}", "run_name=own"])
    train_x, train_y = own_data.folder_tensors(work / "folder")
    ref_x, ref_y = own_data.folder_tensors(work / "reference")
    classifier, report = train_classifier(train_x, train_y, spec=ClassifierSpec(1, own_data.SIZE, 10), val=(ref_x, ref_y))
    reference = compute_stats(classifier, ref_x)
    device = torch.device("cpu")
    amp = autocast_dtype(cfg.train.precision, device)
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    results = []
    for stage in args.stages:
        if stage.startswith("teacher:"):
            _, steps, w = stage.split(":")
            model, integrator, steps, w = load_teacher(cfg, device)[0], "ab2", int(steps), float(w)
        else:
            model, integrator, w = load_teacher(cfg, device, stage=stage)[0], "euler", 1.0
            steps = int(stage.split("-")[2])  # distill-<T>-<S>[-<tag>]
        fd, accuracy = [], []
        for seed in args.seeds:
            fd_seed, accuracy_seed, _ = own_data.score(classifier, reference, model, process, integrator, steps, w, seed,
                                                       args.samples, amp)
            fd.append(fd_seed)
            accuracy.append(accuracy_seed)
        results.append({"stage": stage, "steps": steps, "integrator": integrator, "guidance": w, "fd": fd, "accuracy": accuracy})
        print(f"{stage}: FD {statistics.mean(fd):.3f} accuracy {statistics.mean(accuracy):.3f}", flush=True)
    lines = [f"Stages of {work / 'runs' / 'own'} scored by benchmarks/own_data_stages.py: {args.samples} images per seed, "
             f"seeds {args.seeds}; classifier held-out accuracy {report.val_accuracy:.3f}.", "",
             "| stage | sampler, NFE, w | FD (mean ± std) | FD per seed | accuracy | accuracy per seed |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['stage']} | {r['integrator']}, {r['steps']}, {r['guidance']:g} | {statistics.mean(r['fd']):.3f} ± "
                     f"{statistics.pstdev(r['fd']):.3f} | {' / '.join(f'{v:.3f}' for v in r['fd'])} | "
                     f"{statistics.mean(r['accuracy']):.3f} | {' / '.join(f'{v:.3f}' for v in r['accuracy'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    own_data.RESULTS.mkdir(exist_ok=True)
    (own_data.RESULTS / f"{args.out}.md").write_text(text)
    (own_data.RESULTS / f"{args.out}.json").write_text(json.dumps({"work": str(work), "stages": results}, indent=1))


if __name__ == "__main__":
    main()
