"""``python -m job.launch <command> [job args…]``: the job on every local device, and on many nodes.

    python -m job.launch train --params job.json                      # one process per GPU (1 on CPU)
    python -m job.launch train --params job.json --num-processes 2    # two gloo processes on a CPU machine
    NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 python -m job.launch train --params job.json   # node 1 of 2

Processes per node: ``num_processes`` (flag, env or JSON, like every parameter) > the platform's
``NPROC_PER_NODE`` > the number of visible CUDA GPUs > 1. Nodes, node rank and master address/port come from
:func:`job.platforms.topology.detect_topology` (SageMaker, Vertex AI, Kubeflow, Indexed Jobs, or plain ``NNODES`` …).

* One process on one node (and no DeepSpeed): this process *becomes* ``python -m job …`` (``os.execve``),
  so exit codes and signals are the job's own.
* Otherwise torchrun (``python -m torch.distributed.run``) with explicit flags — ``--standalone`` on one node,
  ``--nnodes/--node_rank/--master_addr/--master_port`` on several — runs ``-m job …`` once per process. It runs
  as a child: SIGTERM/SIGINT are forwarded to it (torchrun passes them to every worker and kills them 30 s
  later), and the launcher exits with the workers' real exit code (2 for a user error on any rank, 143 when
  stopped by SIGTERM) instead of torchrun's blanket 1. When any worker fails, torchrun stops the others at once.

The launcher checks the parameters before starting anything, so a bad parameter costs no GPU time.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from job import exits
from job.context import EXIT_CODE_DIR_ENV, RunContext, environment
from job.errors import UserError
from job.platforms.detect import PlatformInfo
from job.platforms.topology import Topology, detect_topology

log = logging.getLogger("job.launch")

MASTER_WAIT_S = 600.0  # how long a node waits for the master's host name to resolve (pods appear in DNS late)
# Node-level variables from the platform, and torchrun's own, that must not reach torchrun or its workers:
# torchrun gives each worker its per-process RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*, and reads PET_* as defaults.
_SCRUBBED = (
    *("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK"),
    *("ROLE_WORLD_SIZE", "ROLE_NAME", "NODE_RANK", "NNODES", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT"),
)
_SCRUBBED_PREFIXES = ("PET_", "TORCHELASTIC_")


# ------------------------------------------------------------------------------------------- pure decisions
def processes_per_node(*, requested: int | None, topology: Topology, gpus: int) -> int:
    """num_processes > the platform's NPROC_PER_NODE > one per visible GPU > 1."""
    nproc = requested or topology.nproc_per_node or gpus or 1
    if gpus and nproc > gpus:
        raise UserError(
            f"{nproc} processes per node but only {gpus} CUDA GPU(s) are visible: set num_processes "
            f"(or NPROC_PER_NODE) to at most {gpus}, or leave it unset for one process per GPU"
        )
    return nproc


def build_command(
    job_argv: Sequence[str],
    *,
    nproc_per_node: int,
    topology: Topology,
    needs_launcher: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """``python -m job …`` for one process on one node, else torchrun with explicit topology flags.

    ``needs_launcher``: DeepSpeed runs under torchrun even as a single process (it needs torchrun's
    environment; under plain ``python`` it looks for MPI).
    """
    job = ["-m", "job", *job_argv]
    if nproc_per_node == 1 and not topology.multi_node and not needs_launcher:
        return [python, *job]
    torchrun = [python, "-m", "torch.distributed.run"]
    if topology.multi_node:
        torchrun += ["--nnodes", str(topology.nnodes), "--node_rank", str(topology.node_rank)]
        torchrun += ["--master_addr", str(topology.master_addr), "--master_port", str(topology.master_port)]
    else:
        torchrun += ["--standalone"]  # a free local port: several single-node jobs can share a machine
    return [*torchrun, "--nproc_per_node", str(nproc_per_node), "--max_restarts", "0", *job]


def clean_env(
    env: Mapping[str, str], *, extra: Mapping[str, str] | None = None, cpu_threads: int | None = None
) -> dict[str, str]:
    """The environment for torchrun (or the single process): node-level rank variables removed.

    ``extra`` is added (e.g. the socket interface SageMaker wants NCCL/Gloo to use); ``cpu_threads`` sets
    OMP_NUM_THREADS unless the user did (CPU processes sharing a machine; torchrun would otherwise force 1).
    """
    out = {k: v for k, v in env.items() if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)}
    out.update(extra or {})
    if cpu_threads and "OMP_NUM_THREADS" not in env:
        out["OMP_NUM_THREADS"] = str(cpu_threads)
    return out


def worker_env(info: PlatformInfo, env: Mapping[str, str]) -> dict[str, str]:
    """Variables the launcher adds for the workers: the socket interface NCCL/Gloo must use on SageMaker."""
    out: dict[str, str] = {}
    if info.nccl_socket_ifname:
        for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
            if not env.get(name):
                out[name] = info.nccl_socket_ifname
    return out


def describe(*, command: Sequence[str], nproc_per_node: int, topology: Topology, gpus: int, params: Any) -> str:
    """The one log line that says what is started and why."""
    world = nproc_per_node * topology.nnodes
    torchrun = command[1:3] != ["-m", "job"]
    how = "torchrun " + " ".join(command[3 : command.index("-m", 3)]) if torchrun else "a single process"
    device = f"{gpus} CUDA GPU(s)" if gpus else "CPU (gloo)" if world > 1 else "CPU"
    strategy = f"DeepSpeed {params.deepspeed}" if params.deepspeed else "DDP" if world > 1 else "no data parallelism"
    per_step = params.batch_size * params.gradient_accumulation * world
    return (
        f"Launching {topology.nnodes} node(s) × {nproc_per_node} process(es) = world size {world} on {device}, "
        f"{strategy}, topology from {topology.source} (node rank {topology.node_rank}): {how}; effective batch "
        f"{per_step} = {params.batch_size} per device × {params.gradient_accumulation} accumulation × {world}"
    )


# -------------------------------------------------------------------------------------------------- running
def main(argv: Sequence[str] | None = None) -> int:
    from job.cli import normalise_argv
    from job.context import ProcessInfo
    from job.logs import install_handler
    from job.secrets import secret_values

    env = environment()
    install_handler(ProcessInfo(), secrets=secret_values(env))  # every line masked, as the job's own
    job_argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    if not job_argv or job_argv[0] != "train" or "--dry-run" in job_argv:
        _exec([sys.executable, "-m", "job", *job_argv], clean_env(env))  # validate, predict, evaluate: 1 process
    return exits.run(lambda: _launch(job_argv, env), name="launch", env=env)


def _launch(job_argv: list[str], env: Mapping[str, str]) -> int:
    """Check the params, pick processes and topology, and start the job (exec or torchrun)."""
    params, ctx, topology, gpus = _plan_inputs(job_argv, env)
    nproc = processes_per_node(requested=params.num_processes, topology=topology, gpus=gpus)
    command = build_command(job_argv, nproc_per_node=nproc, topology=topology, needs_launcher=bool(params.deepspeed))
    log.info("%s", describe(command=command, nproc_per_node=nproc, topology=topology, gpus=gpus, params=params))
    # The same decision a single process makes for itself (job.cpu): quota, affinity and cores over the processes.
    threads = ctx.cpu.threads_per_process(nproc)
    log.info("CPU threads: %d per process (%s)", threads.threads, threads.reason)
    workers = clean_env(env, extra=worker_env(ctx.platform, env), cpu_threads=threads.threads)
    if topology.multi_node:
        _wait_for_master(topology)
    if command[1:3] == ["-m", "job"]:
        _exec(command, workers)
    return run_torchrun(command, workers)


def _plan_inputs(job_argv: list[str], env: Mapping[str, str]) -> tuple[Any, RunContext, Topology, int]:
    """The checked params (as the job itself will read them), the run context, this node's topology, the GPUs."""
    from job.cli import build_parser
    from job.params import Seq2SeqParams
    from job.preflight import preflight

    args = build_parser().parse_args(job_argv)
    overrides = {k: v for k, v in vars(args).items() if k in Seq2SeqParams.model_fields}
    ctx, params = preflight(overrides, params_file=args.params, env=env)
    return params, ctx, detect_topology(env), ctx.cuda_devices


def run_torchrun(command: list[str], env: dict[str, str]) -> int:
    """Run torchrun as a child, forward SIGTERM/SIGINT to it, and return the workers' real exit code."""
    received: list[int] = []
    children: list[subprocess.Popen] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        log.warning("Received %s: passing it to torchrun, which stops every worker", signal.Signals(signum).name)
        for child in children:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    with tempfile.TemporaryDirectory(prefix="job-exit-codes-") as codes:
        try:
            # Its own session: a terminal's Ctrl-C reaches torchrun once, through us, not twice.
            child = subprocess.Popen(
                command, env={**env, EXIT_CODE_DIR_ENV: codes}, start_new_session=True, preexec_fn=_die_with_parent
            )
            children.append(child)
            for signum in received:  # arrived while torchrun was starting
                children[0].send_signal(signum)
            returncode = children[0].wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        workers = exits.read_exit_codes(Path(codes))
    code = exits.resolve_exit_code(returncode, workers, signalled=received[0] if received else None)
    if code:
        how = f"stopped by {signal.Signals(received[0]).name}" if received else "failed"
        level = logging.WARNING if received else logging.ERROR
        log.log(
            level,
            "Job %s: exit code %d (torchrun exit %d; worker exit codes by rank: %s)",
            how,
            code,
            returncode,
            workers or "none recorded",
        )
    return code


def _exec(command: list[str], env: dict[str, str]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launcher dies (even by SIGKILL), so torchrun never outlives it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _wait_for_master(topology: Topology) -> None:
    waited = wait_for_host(str(topology.master_addr), MASTER_WAIT_S)
    if waited >= 1:
        log.info("Master %s resolved after %.0f s", topology.master_addr, waited)


def wait_for_host(host: str, timeout_s: float = 300.0, *, interval_s: float = 1.0) -> float:
    """Wait until ``host`` resolves (pod and SageMaker host names appear in DNS late); return seconds waited.

    Raises TimeoutError (a retryable failure, exit code 1) naming the host when it never resolves.
    """
    start = time.monotonic()
    delay = interval_s
    while True:
        try:
            socket.getaddrinfo(host, None)
            return time.monotonic() - start
        except (socket.gaierror, UnicodeError) as exc:
            waited = time.monotonic() - start
            if waited >= timeout_s:
                raise TimeoutError(f"master host {host!r} did not resolve within {timeout_s:.0f}s: {exc}") from None
            log.info("Waiting for %s to resolve (%.0fs so far): %s", host, waited, exc)
            time.sleep(min(delay, max(timeout_s - waited, 0.0)))
            delay = min(delay * 2, 10.0)


if __name__ == "__main__":
    raise SystemExit(main())
