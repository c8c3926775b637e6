"""``train.compile``: with ``all`` the torch and DeepSpeed engines take the same steps behind ``torch.compile``
as without and a compiled teacher run saves the bare network's weights (loadable without compiling); with
``inference`` the trained network stays eager and the stage's frozen networks are compiled; compiled sampling
draws the same images; an unknown mode, and a CPU without a C++ compiler, are refused with the config. Real
inductor kernels, built with this machine's compiler."""

import pytest
import torch
from torch import nn

from kacdist.config import ConfigError, load_config
from kacdist.kac import KacProcess
from kacdist.sampling import generate
from kacdist.stages.common import model_from_state
from kacdist.train.batches import InMemoryBatches
from kacdist.train.engine import make_engine
from kacdist.train.loop import LoopSettings
from kacdist.train.teacher import train_teacher
from kacdist.train.workers import Workers

from .test_teacher import MICRO, _micro_model

SETTINGS = LoopSettings(total_kimg=1.0, batch_size=8, lr=1e-2, weight_decay=0.01, grad_clip=0.05)


def _compiled_graphs() -> int:
    """Graphs dynamo has compiled since its caches were last reset (a structurally identical module may reuse a
    graph compiled for another, hence the resets before counting)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(7, 13), nn.Tanh(), nn.Linear(13, 3))


def _steps(engine, steps: int = 4) -> list[float]:
    norms = []
    for step in range(steps):
        g = torch.Generator().manual_seed(100 + step)
        x, y = torch.randn(8, 7, generator=g), torch.randn(8, 3, generator=g)
        engine.backward((engine.model(x) - y).pow(2).mean())
        norms.append(engine.step())
    return norms


@pytest.mark.parametrize("kind", ["torch", "deepspeed"])
def test_a_compiled_engine_takes_the_eager_engines_steps(kind):
    eager = make_engine(kind, _mlp(), SETTINGS, 100, Workers(), torch.device("cpu"))
    eager_norms = _steps(eager)
    torch._dynamo.reset()
    graphs = _compiled_graphs()
    fast = make_engine(kind, _mlp(), SETTINGS, 100, Workers(), torch.device("cpu"), compile_mode="all")
    fast_norms = _steps(fast)
    assert _compiled_graphs() > graphs  # the forward really went through dynamo
    assert fast_norms == pytest.approx(eager_norms, rel=1e-5)
    # train.compile=inference leaves the network being trained eager
    inference = make_engine(kind, _mlp(), SETTINGS, 100, Workers(), torch.device("cpu"), compile_mode="inference")
    for engine, wrapped in ((fast, True), (inference, False)):
        trained = engine.model.module if kind == "deepspeed" else engine.model
        assert isinstance(trained, torch._dynamo.eval_frame.OptimizedModule) == wrapped
    assert fast.state_dict()["model"].keys() == eager.state_dict()["model"].keys()  # no "_orig_mod." prefix
    for name, value in eager.state_dict()["model"].items():
        torch.testing.assert_close(fast.state_dict()["model"][name], value, rtol=1e-5, atol=1e-6)


def test_compiled_teacher_trains_like_eager_and_its_checkpoint_loads_uncompiled(tmp_path, digits64):
    x, y = digits64
    results = {}
    for flag in ("none", "all"):
        cfg = load_config(MICRO + [f"runs_dir={tmp_path}", "train.total_kimg=0.064", f"train.compile={flag}"])
        results[flag] = (cfg, train_teacher(cfg, tmp_path / flag, model=_micro_model(cfg),
                                            batches=InMemoryBatches(x, y, cfg.train.batch_size, cfg.train.seed)))
    eager = torch.load(results["none"][1].checkpoint, weights_only=True)
    fast = torch.load(results["all"][1].checkpoint, weights_only=True)
    assert fast["step"] == eager["step"] == 4
    import pyarrow.parquet as pq

    losses = {flag: pq.read_table(tmp_path / flag / "metrics.parquet").column("loss").to_pylist() for flag in results}
    assert losses["all"] == pytest.approx(losses["none"], rel=1e-5)
    # fused kernels round differently; AdamW turns a rounding difference in a near-zero gradient (a bias in
    # front of a GroupNorm) into up to lr per step, so weights agree to 4 steps x lr, losses to rounding
    bound = 4 * results["all"][0].train.lr
    for key in ("model", "ema"):
        assert fast[key].keys() == eager[key].keys()
        for name, value in eager[key].items():
            torch.testing.assert_close(fast[key][name], value, rtol=0, atol=bound, msg=f"{key}.{name}")
    # the compiled run's checkpoint loads into a plain network and into a compiled one alike
    cfg = results["all"][0]
    plain = _micro_model(cfg)
    plain.load_state_dict(fast["ema"])
    torch._dynamo.reset()
    graphs = _compiled_graphs()
    compiled_net = _micro_model(cfg)
    compiled_net.load_state_dict(fast["ema"])
    compiled_net = torch.compile(compiled_net.eval())
    process = KacProcess(cfg.kac.a, cfg.kac.c, cfg.kac.g, cfg.kac.sampler)
    labels = torch.arange(6) % 10
    a = generate(plain, process, (1, 16, 16), list(range(6)), labels, "ab2", 5, 1.2, 6)
    b = generate(compiled_net, process, (1, 16, 16), list(range(6)), labels, "ab2", 5, 1.2, 6)
    assert _compiled_graphs() > graphs
    torch.testing.assert_close(b.images, a.images, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["none", "inference", "all"])
def test_stage_networks_are_compiled_in_the_inference_and_all_modes(mode):
    from kacdist.train.teacher import build_model

    cfg = load_config(MICRO + [f"train.compile={mode}"])
    state = {"ema": build_model(cfg).state_dict()}
    net = model_from_state(cfg, state, torch.device("cpu"))
    assert isinstance(net, torch._dynamo.eval_frame.OptimizedModule) == (mode != "none")
    assert net.null_label == 10 and not net.training  # attributes reach through the wrapper


def test_compile_on_a_cpu_without_a_cxx_compiler_is_refused_with_the_config(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no c++, g++ or clang++
    with pytest.raises(ConfigError, match=r"train.compile on a CPU needs a C\+\+ compiler on PATH .* train.compile=none"):
        load_config(MICRO + ["train.compile=inference", "train.device=cpu"])
    assert load_config(MICRO + ["train.device=cpu"]).train.compile == "none"


def test_an_unknown_compile_mode_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"train.compile='True' is invalid: allowed values are none, inference, all"):
        load_config(MICRO + ["train.compile=true"])  # a YAML boolean
