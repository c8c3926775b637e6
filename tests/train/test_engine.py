"""Training engines: the DeepSpeed engine takes the same steps as the plain torch engine, and its checkpoints
are rank-independent: ZeRO-1/2 optimizer state sliced over 2 real processes is gathered into torch AdamW's
per-parameter format, and such a state loads into ZeRO on 2 processes and into the plain engine alike. AdamW's
fused kernel, which both engines use, steps like its per-tensor loop.

Real DeepSpeed (no op compiled), real gloo process groups in spawned processes."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from kacdist.train.engine import DeepSpeedEngine, TorchEngine, make_engine
from kacdist.train.loop import LoopSettings
from kacdist.train.workers import Workers

SETTINGS = LoopSettings(total_kimg=1.0, batch_size=8, lr=1e-2, weight_decay=0.01, grad_clip=0.05)
STEPS = 4


def _net() -> nn.Module:
    torch.manual_seed(0)  # odd sizes: ZeRO partitions cut parameters in the middle
    return nn.Sequential(nn.Linear(7, 13), nn.Tanh(), nn.Linear(13, 5), nn.Tanh(), nn.Linear(5, 3))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 7, generator=g), torch.randn(8, 3, generator=g)


def _train(engine, first_step: int, steps: int, rank: int = 0, world: int = 1) -> list[float]:
    norms = []
    share = 8 // world
    for step in range(first_step, first_step + steps):
        x, y = _batch(step)
        x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
        engine.backward((engine.model(x) - y).pow(2).mean())
        norms.append(engine.step())
    return norms


def _reference(steps: int, state: dict | None = None, first_step: int = 0):
    net = _net()
    if state is not None:
        net.load_state_dict(state["model"])
    engine = TorchEngine(net, SETTINGS, 100, Workers(), torch.device("cpu"), state)
    norms = _train(engine, first_step, steps)
    return engine, norms


def test_deepspeed_stage0_takes_the_torch_engines_steps_in_process():
    torch_engine, torch_norms = _reference(STEPS)
    ds = make_engine("deepspeed", _net(), SETTINGS, 100, Workers(), torch.device("cpu"))
    assert isinstance(ds, DeepSpeedEngine)
    ds_norms = _train(ds, 0, STEPS)
    assert ds_norms == pytest.approx(torch_norms, rel=1e-6) and max(torch_norms) > SETTINGS.grad_clip  # clipping was active
    a, b = torch_engine.state_dict(), ds.state_dict()
    for name, value in a["model"].items():
        assert torch.allclose(value, b["model"][name], rtol=1e-6, atol=1e-7), name
    assert b["scheduler"]["last_epoch"] == STEPS and ds.lr == torch_engine.lr
    # the DeepSpeed checkpoint is a torch AdamW state: the plain engine resumes from it
    net = _net()
    net.load_state_dict(b["model"])
    TorchEngine(net, SETTINGS, 100, Workers(), torch.device("cpu"), b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zero_worker(rank: int, port: int, stage: int, out_dir: str, resume_path: str) -> None:
    import torch.distributed as dist

    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    workers = Workers(rank=rank, world_size=2)
    net = _net()
    state = torch.load(resume_path, weights_only=True) if resume_path else None
    if state is not None:
        net.load_state_dict(state["model"])
    engine = DeepSpeedEngine(net, SETTINGS, 100, workers, torch.device("cpu"), state, zero_stage=stage, micro_batch=4)
    first = STEPS if state is not None else 0
    norms = _train(engine, first, STEPS if state is None else 1, rank, 2)
    gathered = engine.state_dict()  # a collective: both ranks
    if rank == 0:
        gathered["norms"] = torch.tensor(norms)
        torch.save(gathered, os.path.join(out_dir, f"zero{stage}-{'resumed' if state is not None else 'fresh'}.pt"))
    dist.barrier()  # rank 0 has written the state before either process tears down its group
    dist.destroy_process_group()


def _spawn(stage: int, out_dir, resume_path: str = "") -> None:
    mp.start_processes(_zero_worker, args=(_free_port(), stage, str(out_dir), resume_path), nprocs=2, start_method="spawn")


def _assert_states_match(ours: dict, reference: dict, what: str) -> None:
    for name, value in reference["model"].items():
        assert torch.allclose(ours["model"][name], value, rtol=1e-5, atol=1e-6), (what, name)
    ref_opt, opt = reference["optimizer"], ours["optimizer"]
    assert set(opt["state"]) == set(ref_opt["state"])
    for index, entry in ref_opt["state"].items():
        assert float(opt["state"][index]["step"]) == float(entry["step"]), (what, index)
        for key in ("exp_avg", "exp_avg_sq"):
            assert opt["state"][index][key].shape == entry[key].shape
            assert torch.allclose(opt["state"][index][key], entry[key], rtol=1e-5, atol=1e-8), (what, index, key)
    assert opt["param_groups"][0]["params"] == ref_opt["param_groups"][0]["params"]
    assert opt["param_groups"][0]["lr"] == pytest.approx(ref_opt["param_groups"][0]["lr"])


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_state_is_gathered_and_resumes_on_any_number_of_workers(tmp_path, stage):
    reference, norms = _reference(STEPS)
    _spawn(stage, tmp_path)
    fresh = torch.load(tmp_path / f"zero{stage}-fresh.pt", weights_only=True)
    # ZeRO clips with the global norm of the gradients averaged over both ranks: the full-batch norm
    assert fresh["norms"].tolist() == pytest.approx(norms, rel=1e-5)
    _assert_states_match(fresh, reference.state_dict(), f"ZeRO-{stage} gathered")
    # one more step: the plain engine from the reference state vs ZeRO on 2 ranks from the gathered state
    continued, _ = _reference(1, reference.state_dict(), first_step=STEPS)
    _spawn(stage, tmp_path, str(tmp_path / f"zero{stage}-fresh.pt"))
    resumed = torch.load(tmp_path / f"zero{stage}-resumed.pt", weights_only=True)
    _assert_states_match(resumed, continued.state_dict(), f"ZeRO-{stage} resumed on 2 ranks")
    # and the gathered state resumes in the plain single-process engine
    single, _ = _reference(1, fresh, first_step=STEPS)
    _assert_states_match(single.state_dict(), continued.state_dict(), f"ZeRO-{stage} resumed in one process")


def test_the_optimizer_takes_fused_adamw_steps_equal_to_the_per_tensor_loop():
    from kacdist.train.engine import _optimizer_and_schedule

    pairs = []
    for fused in (True, False):
        net = _net()
        optimizer, schedule = _optimizer_and_schedule(net, SETTINGS.lr, SETTINGS.weight_decay, 100, 0.1, 0.0)
        assert optimizer.param_groups[0]["fused"]  # on this CPU
        optimizer.param_groups[0]["fused"] = fused  # the per-tensor loop: what AdamW does unless told otherwise
        pairs.append((net, optimizer, schedule))
    for step in range(STEPS):
        x, y = _batch(step)
        for net, optimizer, schedule in pairs:
            optimizer.zero_grad()
            (net(x) - y).pow(2).mean().backward()
            optimizer.step()
            schedule.step()
    (fused_net, *_), (loop_net, *_) = pairs
    assert not torch.equal(fused_net[0].weight, _net()[0].weight)  # the steps moved the weights
    for fused_p, loop_p in zip(fused_net.parameters(), loop_net.parameters()):
        torch.testing.assert_close(fused_p, loop_p, rtol=1e-5, atol=1e-6)
