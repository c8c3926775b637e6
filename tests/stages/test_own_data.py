"""Bringing your own images: a 28x28 greyscale labelled folder goes folder -> shards -> teacher -> ladder ->
samples at its native size with one short command per stage, passing only the folder or dataset path, the
run name and shortened kimg; the run owns its config afterwards; contradictions are refused by key.

Real files all the way: PNGs written from scikit-learn's digits (8x8, enlarged to 28x28 with a bilinear
filter), the real converter, the real tiny UNet, the commands of jobs/launch.py called in this process."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from kacdist.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
SHORT = ["train.total_kimg=0.064", "train.batch_size=32", "train.checkpoint_every_kimg=0.064", "train.log_every_kimg=0.032",
         "eval.after_teacher=false", "sample.steps=2", "sample.num_images=4", "sample.batch_size=4"]
LADDER = ["distill.ladder=[4,2,1]", "distill.total_kimg=0.032", "distill.batch_size=16"]


def launch(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("kacdist_launch", REPO / "jobs" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def write_digit_folder(root: Path, per_class: int = 30) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts = dict.fromkeys(range(10), 0)
    for image, label in zip(digits.images, digits.target):
        if counts[label] == per_class:
            continue
        counts[label] += 1
        grey = Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").resize((28, 28), Image.Resampling.BILINEAR)
        (root / f"digit-{label}").mkdir(parents=True, exist_ok=True)
        grey.save(root / f"digit-{label}" / f"{counts[label]:03d}.png")
    return root


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    """folder -> shards (native size and channels from the images) -> teacher -> ladder, as a user would."""
    tmp = tmp_path_factory.mktemp("own")
    folder = write_digit_folder(tmp / "my-digits")
    from data_tools.from_folder import main as convert

    assert convert([str(folder), "--out", str(tmp / "shards"), "--workers", "1"]) == 0
    common = ["dataset=folder", f"dataset.path={tmp / 'shards'}", f"runs_dir={tmp / 'runs'}", "run_name=mine"]
    assert launch(["stage=teacher"] + common + SHORT) == 0
    # later stages name only the run: the rest comes from the run's own config
    assert launch(["stage=ladder", f"runs_dir={tmp / 'runs'}", "run_name=mine"] + LADDER) == 0
    return tmp, common


def test_the_card_supplies_shape_classes_and_shards(own_run):
    tmp, common = own_run
    card = json.loads((tmp / "shards" / "dataset.json").read_text())
    assert (card["resolution"], card["channels"], card["num_classes"]) == (28, 1, 10)
    cfg = load_config(["stage=teacher", "dataset=folder", f"dataset.path={tmp / 'shards'}", f"runs_dir={tmp / 'fresh'}"])
    d = cfg.dataset
    assert (d.resolution, d.channels, d.num_classes, d.hflip, d.in_memory) == (28, 1, 10, False, True)
    assert d.class_names == [f"digit-{i}" for i in range(10)] and d.name == "my-digits" and cfg.run_name == "my-digits"
    assert d.urls == str(tmp / "shards" / "train-000000.tar")  # the card's shard list
    # the validated small-data recipe, with nothing passed for it
    assert (cfg.model.preset, cfg.kac.a, cfg.kac.c, cfg.kac.g) == ("tiny", 25.0, 2.0, "t")
    assert (cfg.train.total_kimg, cfg.train.batch_size, cfg.train.lr, cfg.train.ema_decay) == (160, 32, 1e-3, 0.999)
    assert (cfg.distill.batch_size, cfg.distill.lr, cfg.distill.total_kimg) == (32, 5e-4, 10.0)
    assert [cfg.distill.stage_kimg(k) for k in (20, 4, 2, 1)] == [10.0, 20.0, 30.0, 40.0]
    assert (cfg.distill.guidance, cfg.distill.rungs()) == (1.3, [(100, 20), (20, 4), (4, 2), (4, 1)])


def test_the_whole_path_trains_and_samples_at_28x28(own_run):
    tmp, common = own_run
    root = tmp / "runs" / "mine"
    for stage in ("teacher", "distill-4-2", "distill-4-1"):  # the recipe's ladder_from.1=4: 4->2 and 4->1
        assert (root / stage / "DONE").exists(), stage
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["dataset"]["resolution"] == 28 and saved["dataset"]["num_classes"] == 10
    for w in ("1.2", "1"):  # two guidance weights, two sets of files
        assert launch(["stage=sample", f"runs_dir={tmp / 'runs'}", "run_name=mine", f"sample.guidance={w}"]) == 0
    assert launch(["stage=sample", f"runs_dir={tmp / 'runs'}", "run_name=mine", "sample.source=distill-4-1"]) == 0
    names = sorted(p.name for p in (root / "sample").iterdir())
    assert names == sorted([f"{stem}.{ext}" for stem in ("ab2-2-w1.2", "ab2-2-w1", "distill-4-1-euler-1-w1")
                            for ext in ("png", "npz", "json")] + ["provenance.json"])
    images = np.load(root / "sample" / "distill-4-1-euler-1-w1.npz")["images"]
    assert images.shape == (4, 28, 28, 1)


def test_keys_that_contradict_the_card_are_refused(own_run):
    tmp, _ = own_run
    base = ["dataset=folder", f"dataset.path={tmp / 'shards'}", f"runs_dir={tmp / 'other'}"]
    with pytest.raises(ConfigError, match=r"dataset.resolution=32 contradicts the dataset card .*dataset.json \(resolution: 28\)"):
        load_config(base + ["dataset.resolution=32"])
    with pytest.raises(ConfigError, match=r"dataset.channels=3 contradicts"):
        load_config(base + ["dataset.channels=3"])
    assert load_config(base + ["dataset.resolution=28", "dataset.num_classes=10"]).dataset.resolution == 28
    with pytest.raises(ConfigError, match=r"dataset.num_classes=5 contradicts"):
        load_config(base + ["dataset.num_classes=5"])
    assert load_config(base + ["dataset.num_classes=0"]).dataset.num_classes == 0  # unconditional on purpose


@pytest.mark.parametrize(
    "argv,message",
    [
        (["kac.a=30"], r"kac.a=30.0 would change kac.a from 25.0 .* to 30.0\. Drop it to continue this run, or start a new run"),
        (["model=lightweight"], r"model=lightweight would change model.preset from 'tiny'"),
        (["dataset=digits"], r"dataset=digits would change dataset.name from 'my-digits' .* to 'digits'"),
        (["train.lr=0.1"], r"train.lr=0.1 would change train.lr"),
        (["dataset.hflip=true"], r"dataset.hflip"),
    ],
)
def test_a_trained_run_refuses_a_different_data_kac_or_model(own_run, argv, message):
    tmp, _ = own_run
    with pytest.raises(ConfigError, match=message):
        load_config(["stage=ladder", f"runs_dir={tmp / 'runs'}", "run_name=mine"] + argv)


def test_a_trained_run_accepts_its_own_values_and_free_keys(own_run):
    tmp, common = own_run
    cfg = load_config(["stage=ladder"] + common + ["kac.a=25", "model=tiny", "cluster.workers=2", "train.engine=deepspeed",
                                                   "train.compile=inference", "train.precision=bf16", "sample.steps=7",
                                                   "eval.num_samples=9"])
    assert (cfg.cluster.workers, cfg.train.engine, cfg.train.compile, cfg.train.precision, cfg.sample.steps,
            cfg.eval.num_samples) == (2, "deepspeed", "inference", "bf16", 7, 9)
    assert cfg.dataset.resolution == 28 and cfg.train.total_kimg == 0.064  # the run's, not the folder recipe's


def test_a_finished_distillation_stage_is_not_retrained_with_other_settings(own_run):
    tmp, _ = own_run
    run = ["stage=ladder", f"runs_dir={tmp / 'runs'}", "run_name=mine"]
    with pytest.raises(ConfigError, match=r"distill.lr=0.1: stage distill-4-2 of run .* has finished with distill.lr=0.0005"):
        load_config(run + LADDER + ["distill.lr=0.1"])
    assert load_config(run + LADDER).distill.lr == 5e-4
    # a not-yet-finished stage is free: another rung
    assert load_config(["stage=distill", f"runs_dir={tmp / 'runs'}", "run_name=mine", "distill.teacher_steps=2",
                        "distill.student_steps=1", "distill.tag=b", "distill.lr=0.1"]).distill.lr == 0.1


def test_a_run_that_has_not_trained_is_not_bound_by_its_saved_config(tmp_path):
    from kacdist.config.loader import save_config

    save_config(load_config([f"runs_dir={tmp_path}", "kac.a=30"]), tmp_path / "digits" / "config.yaml")
    assert load_config([f"runs_dir={tmp_path}", "kac.a=40"]).kac.a == 40.0
