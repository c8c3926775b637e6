"""The report's HTML: one page, CSS inline, no script or font from elsewhere; images are PNG files beside
it (relative ``src``), so ``<run>/report/`` can be copied or served as it is.

Built with ``html.escape`` (no template engine): every value from the run directory is escaped. A small
inline script records, once the page has loaded, how many of its images loaded
(``data-images-loaded`` / ``data-images-total`` on ``<body>``), which the browser test reads.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from kacdist.report.collect import RunData, StageData
from kacdist.report.plots import finite, mean_over_seeds, metric_keys
from kacdist.report.trajectories import TrajectoryResult

NOT_RECORDED = "not recorded"

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #777; } .figure { margin: 0.6em 0; } .figure img { max-width: 100%; border: 1px solid #ddd; }
.grids { display: flex; flex-wrap: wrap; gap: 0.8em; } .grids figure { margin: 0; text-align: center; font-size: 0.85em; }
img.pixels { image-rendering: pixelated; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.status-finished, .status-early_stopped { color: #176b2c; font-weight: 600; }
.status-running, .status-pending { color: #8a5a00; font-weight: 600; }
.status-stopped, .status-failed, .status-cancelled, .status-timeout, .status-not-started { color: #a11; font-weight: 600; }
"""

# Counts the images that loaded (complete, with a size) once the page and its images have loaded.
IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].complete && images[i].naturalWidth > 0) loaded++; }
  document.body.setAttribute("data-images-loaded", String(loaded));
  document.body.setAttribute("data-images-total", String(images.length));
});
"""


@dataclass
class Picture:
    src: str  # file name beside report.html
    caption: str = ""
    width: int | None = None  # display width (small pixel grids are shown enlarged)


@dataclass
class Pictures:
    """What was drawn or copied for the page, by section."""

    fd_vs_nfe: Picture | None = None
    training: dict[str, Picture] = field(default_factory=dict)  # by stage
    velocity: dict[str, Picture] = field(default_factory=dict)
    grids: dict[str, list[Picture]] = field(default_factory=dict)
    grid_counts: dict[str, int] = field(default_factory=dict)  # snapshots the stage has (some may be left out)
    samples: list[Picture] = field(default_factory=list)
    heatmap: Picture | None = None
    trajectory_time: Picture | None = None
    trajectory_scatter: dict[str, Picture] = field(default_factory=dict)


def number(value: Any, spec: str = ".4g") -> str:
    return format(value, spec) if finite(value) else "—"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m" if hours else f"{m}m {s:02d}s"


def timestamp(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    """A table of already escaped (or HTML) cells; ``numeric`` columns are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(picture: Picture | None, alt: str, css: str = "") -> str:
    if picture is None:
        return ""
    width = f' width="{picture.width}"' if picture.width else ""
    cls = f' class="{css}"' if css else ""
    caption = f"<figcaption>{escape(picture.caption)}</figcaption>" if picture.caption else ""
    return (f'<figure class="figure"><img src="{escape(picture.src)}" alt="{escape(alt)}"{width}{cls}>'
            f"{caption}</figure>")


def _status(status: str) -> str:
    return f'<span class="status-{escape(status.replace(" ", "-"))}">{escape(status)}</span>'


def _started(stage: StageData) -> str:
    return escape(stage.provenance[0].get("started_at", "—")) if stage.provenance else NOT_RECORDED


def stages_section(data: RunData) -> str:
    if not data.stages:
        return "<h2>Stages</h2><p class=\"muted\">No training stage in this run.</p>"
    rows = []
    for s in data.stages:
        kimg = f"{number(s.kimg, 'g')} / {number(s.total_kimg, 'g')}" if s.total_kimg is not None else number(s.kimg, "g")
        slurm = ("—" if s.slurm_state == "-"
                 else f"{escape(s.slurm_state)} (job {escape(s.job_id)}, requeues {escape(s.requeues)})")
        rows.append([
            f'<a href="#stage-{escape(s.name)}">{escape(s.name)}</a>', _status(s.status), kimg, escape(s.loss),
            escape(s.fd), duration(s.train_seconds), _started(s), timestamp(s.finished_at),
            str(len(s.provenance)) if s.provenance else NOT_RECORDED, slurm,
            escape(Path(s.checkpoint).name if s.checkpoint not in ("", "-") else "—"), escape(s.note),
        ])
    return "<h2>Stages</h2>" + _table(
        ["stage", "status", "kimg done / total", "latest loss", "latest FD", "training time", "started",
         "finished", "attempts", "SLURM", "newest checkpoint", "note"], rows, numeric={2, 3, 4, 5})


def _eval_cells(rows: list[dict], metrics: list[tuple[str, str]]) -> list[str]:
    cells = [number(mean_over_seeds(rows, key), ".2f") for key, _ in metrics]
    if any(finite(r.get("accuracy")) for r in rows):
        cells.append(number(mean_over_seeds(rows, "accuracy"), ".3f"))
    else:
        cells.append("—")
    return cells


def eval_section(data: RunData, pictures: Pictures) -> str:
    out = ["<h2>Sample quality against NFE</h2>"]
    rows = data.eval_rows
    if not rows:
        return out[0] + '<p class="muted">No evaluation yet (stage=eval writes eval/fd_vs_nfe.parquet).</p>'
    header = next((r.get("header") for r in rows if r.get("header")), "")
    if header:
        out.append(f"<p>{escape(header)}. Values are means over seeds.</p>")
    out.append(_img(pictures.fd_vs_nfe, "sample quality against NFE"))
    metrics = metric_keys(rows)
    table = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("model"), r.get("integrator"), r.get("steps"), r.get("guidance")), []).append(r)
    for (model, integrator, steps, guidance), hit in groups.items():
        real = model == "real"
        table.append([
            escape("real vs real" if real else str(model)), escape(integrator or "—"), "—" if real else str(steps),
            "—" if real else number(guidance, "g"), "—" if real else str(hit[0].get("nfe")),
            *_eval_cells(hit, metrics), str(len(hit)),
            "—" if real else number(mean_over_seeds(hit, "images_per_s"), ".0f"),
        ])
    out.append(_table(["model", "integrator", "steps", "w", "NFE", *[label for _, label in metrics], "accuracy", "seeds",
                       "images/s"], table, numeric=set(range(2, 8 + len(metrics)))))
    out.append(_provenance_block("eval", data.eval_provenance))
    return "".join(out)


def _provenance_block(name: str, attempts: list[dict]) -> str:
    if not attempts:
        return f'<p class="muted">Provenance of {escape(name)}: {NOT_RECORDED}.</p>'
    rows = []
    for i, a in enumerate(attempts, start=1):
        git = a.get("git") or {}
        commit = (git.get("commit") or "")[:12] or "—"
        if git.get("dirty"):
            commit += " (uncommitted changes)"
        hw = a.get("hardware") or {}
        gpus = hw.get("gpus") or []
        machine = f"{hw.get('hostname', '—')}: {hw.get('cpu', '—')} × {hw.get('cpu_count', '—')}"
        if gpus:
            machine += f", {len(gpus)} × {gpus[0]}"
        versions = a.get("versions") or {}
        shown = ", ".join(f"{k} {versions[k]}" for k in ("kacdist", "python", "torch", "numpy", "ray", "deepspeed", "wandb")
                          if versions.get(k))
        slurm = a.get("slurm") or {}
        job = f"job {slurm.get('job_id')}, restart {slurm.get('restart_count', 0)}" if slurm else "—"
        rows.append([str(i), escape(str(a.get("started_at", "—"))), escape(" ".join(map(str, a.get("command") or []))),
                     escape(commit), escape(machine), escape(shown), escape(job)])
    return (f"<details><summary>Provenance of {escape(name)}: {len(attempts)} attempt{'s' if len(attempts) > 1 else ''}"
            "</summary>" + _table(["#", "started", "command", "git", "machine", "versions", "SLURM"], rows) + "</details>")


def stage_sections(data: RunData, pictures: Pictures) -> str:
    out = []
    for s in data.stages:
        out.append(f'<h2 id="stage-{escape(s.name)}">Stage {escape(s.name)}: {_status(s.status)}</h2>')
        facts = [f"kimg {number(s.kimg, 'g')} of {number(s.total_kimg, 'g')}"]
        if s.done:
            facts.append(f"finished at step {s.done.get('step')} ({escape(str(s.done.get('status', 'finished')))})")
        if s.source:
            src = s.source
            teacher = src.get("stage") or src.get("checkpoint")
            how = f"{src.get('teacher_integrator')}, {src.get('teacher_steps')} steps"
            if src.get("guidance") is not None:
                how += f", w = {src['guidance']:g}"
            facts.append(f"distilled from {escape(str(teacher))} ({escape(how)}) into a {src.get('student_steps')}-step "
                         f"student, x from {escape(str(src.get('x_source')))}")
        if s.note:
            facts.append(escape(s.note))
        out.append("<p>" + "; ".join(facts) + ".</p>")
        if s.name in pictures.training:
            out.append(_img(pictures.training[s.name], f"{s.name} loss, learning rate and memory"))
        elif s.path.is_dir():
            out.append('<p class="muted">No metrics logged yet.</p>')
        out.append(_img(pictures.velocity.get(s.name), f"{s.name} velocity norm per time bin"))
        grids = pictures.grids.get(s.name, [])
        if grids:
            have = pictures.grid_counts.get(s.name, len(grids))
            shown = f" ({len(grids)} of {have} shown)" if have > len(grids) else ""
            out.append(f"<h3>Sample grids (EMA){shown}</h3><div class=\"grids\">"
                       + "".join(_img(g, f"{s.name} {g.caption}", "pixels") for g in grids) + "</div>")
        if s.path.is_dir():
            out.append(_provenance_block(s.name, s.provenance))
        if s.config_text:
            out.append(f"<details><summary>{escape(s.name)}/config.yaml</summary><pre>{escape(s.config_text)}</pre></details>")
    return "".join(out)


def trajectory_section(results: list[TrajectoryResult], skipped: list[tuple[str, str]], samples: int,
                       pictures: Pictures) -> str:
    if not results and not skipped:
        return ""
    out = ["<h2>Trajectory discrepancy (teacher vs student)</h2>",
           f"<p>Each finished distillation stage against the model it was distilled from, from the same {samples} "
           "prior draws: the mean squared distance at the student's nodes (Fig. B-2) and, per sample, the mean "
           "distance along the path against the endpoint distance (Fig. B-3).</p>"]
    out.append(_img(pictures.trajectory_time, "trajectory discrepancy against t"))
    rows = []
    for r in results:
        c = r.comparison
        rows.append([escape(r.pair.stage), escape(r.pair.teacher), f"{escape(c.teacher_integrator)} × {c.teacher_steps}",
                     str(c.student_steps), number(float(c.endpoint.mean()), ".4g"), number(float(c.mean_traj.mean()), ".4g"),
                     number(c.pearson_r, ".3f"), number(c.r2, ".3f")])
    if rows:
        out.append(_table(["student", "teacher", "teacher integrator × steps", "student steps", "mean endpoint ‖x − x̂‖",
                           "mean trajectory ‖x − x̂‖", "Pearson r", "R²"], rows, numeric={3, 4, 5, 6, 7}))
    out.append('<div class="grids">' + "".join(_img(p, f"{name} endpoint vs trajectory discrepancy")
                                               for name, p in pictures.trajectory_scatter.items()) + "</div>")
    for stage, why in skipped:
        out.append(f'<p class="muted">{escape(stage)}: not compared: {escape(why)}.</p>')
    return "".join(out)


def samples_section(data: RunData, pictures: Pictures) -> str:
    if not pictures.samples:
        return ""
    return ("<h2>Samples (stage=sample)</h2><div class=\"grids\">"
            + "".join(_img(p, p.caption, "pixels") for p in pictures.samples) + "</div>"
            + _provenance_block("sample", data.sample_provenance))


def tune_section(data: RunData, pictures: Pictures) -> str:
    tune = data.tune
    if tune is None:
        return ""
    out = ["<h2>Tune: the (a, c, g) sweep</h2>", _img(pictures.heatmap, "Tune heat map")]
    if tune.summary:
        out.append(f"<pre>{escape(tune.summary)}</pre>")
    trials = sorted(tune.trials, key=lambda r: (not finite(r.get("final_metric")), r.get("final_metric") or 0.0))
    if trials:
        rows = [[escape(str(r.get("trial"))), number(r.get("a"), "g"), number(r.get("c"), "g"), escape(str(r.get("g"))),
                 str(r.get("seed")), escape(str(r.get("origin"))), number(r.get("kimg"), "g"),
                 number(r.get("final_metric"), ".4g"), "yes" if r.get("stopped_early") else "no", duration(r.get("wall_s")), escape(str(r.get("error") or ""))]
                for r in trials]
        out.append(_table(["trial", "a", "c", "g", "seed", "origin", "kimg", "final metric", "stopped early", "wall",
                           "error"], rows, numeric={1, 2, 6, 7}))
    elif not tune.summary:
        out.append('<p class="muted">The sweep has no results yet.</p>')
    if tune.best:
        out.append(f"<details><summary>best.yaml</summary><pre>{escape(tune.best)}</pre></details>")
    out.append(_provenance_block("tune", tune.provenance))
    return "".join(out)


def render(data: RunData, pictures: Pictures, trajectories: list[TrajectoryResult],
           skipped: list[tuple[str, str]], trajectory_samples: int) -> str:
    finished = sum(s.done is not None for s in data.stages)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    summary = f"{finished} of {len(data.stages)} training stages finished" if data.stages else "no training stages"
    config = (f"<pre>{escape(data.config_text)}</pre>" if data.config_text else f'<p class="muted">{NOT_RECORDED}</p>')
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>kacdist report: {escape(data.name)}</title>",
        f"<style>{STYLE}</style><script>{IMAGE_CHECK}</script></head><body>",
        f"<h1>Run {escape(data.name)}</h1>",
        f'<p class="muted">{escape(str(data.root))} · {summary} · report written {generated}</p>',
        stages_section(data),
        eval_section(data, pictures),
        trajectory_section(trajectories, skipped, trajectory_samples, pictures),
        stage_sections(data, pictures),
        samples_section(data, pictures),
        tune_section(data, pictures),
        "<h2>Configuration</h2><details><summary>config.yaml (the run's resolved config)</summary>",
        config,
        "</details></body></html>",
    ]
    return "\n".join(p for p in parts if p)
