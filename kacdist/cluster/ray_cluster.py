"""A Ray cluster across the nodes of one SLURM allocation, for a stage trained by Ray Train on several nodes.

submitit starts one task per node (``srun``). Task 0 starts the Ray head on the first node of the allocation
and waits until every node has joined; the other tasks start Ray worker nodes that join the head and wait
for the head's ``finished`` file in the run directory (a shared file system, as for the checkpoints), then
stop. The head's port comes from ``cluster.ray_port`` or, when 0, from the job id, and the other Ray ports
are laid out above it, so two jobs sharing a node do not collide. Ray Train then sets up NCCL (or gloo)
between the workers itself; only the NCCL network interface may need a ``cluster.setup`` line
(``export NCCL_SOCKET_IFNAME=...``).

Every Ray process is started with USR2 ignored: SLURM signals every process of the job step at the time
limit, and only the stage's driver (task 0) should act on it (kacdist.cluster.preemption).
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayPorts:
    head: int  # GCS
    node_manager: int
    object_manager: int
    client_server: int
    worker_min: int
    worker_max: int


def ray_ports(job_id: str, ray_port: int = 0) -> RayPorts:
    """Ports for the Ray cluster of one job: from ``ray_port`` up, or derived from the job id so that
    consecutive jobs on a node use disjoint blocks (4 fixed ports from 20000 + 8·(id mod 2500), workers' ports
    in one of 200 bands of 100 from 40000)."""
    number = int("".join(ch for ch in str(job_id).split("_")[0] if ch.isdigit()) or "0")
    if ray_port:
        base, band = ray_port, ray_port + 10
    else:
        base, band = 20000 + 8 * (number % 2500), 40000 + 100 * (number % 200)
    return RayPorts(base, base + 1, base + 2, base + 3, band, band + 99)


def _python_bin(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    return str(found) if found.exists() else (shutil.which(name) or name)


def head_command(node_ip: str, ports: RayPorts, cpus: int, gpus: int) -> list[str]:
    return [
        _python_bin("ray"), "start", "--head", f"--node-ip-address={node_ip}", f"--port={ports.head}",
        f"--node-manager-port={ports.node_manager}", f"--object-manager-port={ports.object_manager}",
        f"--ray-client-server-port={ports.client_server}", f"--min-worker-port={ports.worker_min}",
        f"--max-worker-port={ports.worker_max}", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
        "--include-dashboard=false", "--disable-usage-stats",
    ]


def worker_command(head_ip: str, node_ip: str, ports: RayPorts, cpus: int, gpus: int) -> list[str]:
    return [
        _python_bin("ray"), "start", f"--address={head_ip}:{ports.head}", f"--node-ip-address={node_ip}",
        f"--node-manager-port={ports.node_manager}", f"--object-manager-port={ports.object_manager}",
        f"--min-worker-port={ports.worker_min}", f"--max-worker-port={ports.worker_max}",
        f"--num-cpus={cpus}", f"--num-gpus={gpus}", "--disable-usage-stats",
    ]


@dataclass(frozen=True)
class NodePlan:
    """What task ``rank`` of an allocation runs, as commands (checked in tests for a 2-node allocation)."""

    rank: int
    head_ip: str
    node_ip: str
    start: list[str]
    address: str  # what the driver passes to ray.init
    stop: list[str]


def node_plan(rank: int, hostnames: list[str], job_id: str, cpus: int, gpus: int, ray_port: int = 0,
              resolve=socket.gethostbyname) -> NodePlan:
    ports = ray_ports(job_id, ray_port)
    head_ip = resolve(hostnames[0])
    node_ip = resolve(hostnames[rank])
    start = head_command(head_ip, ports, cpus, gpus) if rank == 0 else worker_command(head_ip, node_ip, ports, cpus, gpus)
    return NodePlan(rank, head_ip, node_ip, start, f"{head_ip}:{ports.head}", [_python_bin("ray"), "stop", "--force"])


def _ignore_usr2() -> None:  # runs in the child between fork and exec; inherited by every Ray process
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def start_node(plan: NodePlan) -> None:
    log.info("ray node %d: %s", plan.rank, " ".join(plan.start))
    subprocess.run(plan.start, check=True, preexec_fn=_ignore_usr2, stdout=subprocess.DEVNULL)


def wait_for_nodes(address: str, nodes: int, timeout_s: float = 600) -> None:
    """Task 0: block until ``nodes`` Ray nodes are alive (the other tasks may start later)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        alive = sum(1 for n in ray.nodes() if n.get("Alive"))
        if alive >= nodes:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {alive} of {nodes} Ray nodes joined {address} within {timeout_s:.0f} s: see the "
                               "other tasks' logs (firewall between nodes? cluster.ray_port taken?)")
        time.sleep(2)


def serve_until(finished: Path, plan: NodePlan, poll_s: float = 5.0) -> None:
    """Tasks 1..N-1: keep this node in the Ray cluster until the head writes ``finished``."""
    try:
        while not finished.exists():
            time.sleep(poll_s)
    finally:
        subprocess.run(plan.stop, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
