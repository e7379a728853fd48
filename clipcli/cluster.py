"""Running a job on Ray: one model-holding actor per GPU (or N CPU actors), outputs written by the driver.

`--cluster local|auto|ADDRESS` swaps `run_job`'s executor for `RayExecutor`.
Each actor sets the job up once and then reads and computes batches of
inputs sent as paths (decoded inside the actor, never shipped as pixels); the
outcomes stream back to the driver, which writes them through the atomic
writer and keeps the one progress bar, so outputs, reports, exit codes and
resume are those of a local run. Ray's core actor API is used rather than Ray
Data because the runner needs each input's own outcome or error, in any
order, and exactly one write per input; docs/scale-out.md says more.
"""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipcli.errors import BadInputError, ClipcliError, first_line
from clipcli.runner import Job, computed

RAY_EXTRA = "pip install 'clipcli[ray]'"
ATTEMPTS = 3  # an input whose worker dies this many times, running alone, fails (a decoder that crashes on it)
IN_FLIGHT = 2  # batches queued per actor, so it never waits for the driver


def executor_for(cluster: str | None, workers: int | None = None) -> RayExecutor | None:
    """The executor `--cluster` names, or None for a local run. Checks that Ray is installed."""
    if cluster is None:
        return None
    if not cluster.strip():
        raise BadInputError("--cluster needs local, auto or a head node's ADDRESS")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BadInputError(f"--cluster needs Ray, which is not installed: {RAY_EXTRA}") from None
    return RayExecutor(cluster.strip(), workers)


@dataclass
class RayExecutor:
    """Runs a job's `read` and `compute` on Ray actors; the driver (`run_job`) writes."""

    cluster: str = "local"
    workers: int | None = None

    def outcomes(self, job: Job, todo: Sequence[tuple[int, Path]]) -> Iterator[tuple[int, Any]]:
        if not todo:
            return
        import ray

        started = _connect(ray, self.cluster)
        actors: list = []
        try:
            actors = _start_actors(ray, job, self.workers)
            _check_shared_paths(ray, actors, [path for _, path in todo])
            yield from _stream(ray, actors, todo, max(1, job.batch_size, job.read_workers))
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()


def _connect(ray, cluster: str) -> bool:
    """Join or start Ray; True when this call started it (and so stops it at the end)."""
    if cluster not in ("local", "auto"):
        _check_reachable(cluster)
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    try:
        if cluster == "local":
            ray.init(include_dashboard=False, **quiet)
        elif cluster == "auto":
            ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", **quiet)
        else:
            ray.init(address=cluster, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise BadInputError(f"--cluster {cluster}: cannot reach a Ray cluster ({first_line(err)})") from None
    return True


def _check_reachable(address: str) -> None:
    """A head node's port must answer within seconds; Ray itself would retry for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise BadInputError(f"--cluster {address}: expected local, auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as err:
        raise BadInputError(f"--cluster {address}: no Ray head answers there ({err.strerror or err})") from None


def _start_actors(ray, job: Job, workers: int | None) -> list:
    """One actor per GPU of the cluster, else `workers` (default 1) CPU actors; each set up before any input.

    CPU actors share the cluster's CPUs between them (Ray gives each as many
    math threads as CPUs), so one actor computes as fast as a local run.
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        count, share = gpus, {"num_gpus": 1}
    else:
        count = workers or 1
        share = {"num_cpus": max(1, int(resources.get("CPU", 1)) // count)}
    actor_class = ray.remote(max_restarts=-1, max_task_retries=0)(_Worker)
    actors = [actor_class.options(**share).remote(job, os.getcwd()) for _ in range(count)]
    try:
        ray.get([actor.setup.remote() for actor in actors])
    except BaseException as err:  # no actor outlives a failed start on a cluster that stays up
        for actor in actors:
            ray.kill(actor)
        if isinstance(err, ray.exceptions.RayTaskError) and isinstance(err.cause, ClipcliError):
            raise err.cause from None
        raise
    return actors


def _check_shared_paths(ray, actors: list, paths: list[Path]) -> None:
    """Every node must see the inputs at the same paths (a shared file system); say so before any work."""
    seen_here = [os.path.abspath(path) for path in paths if os.path.exists(path)]  # the rest fail as locally
    if not seen_here:
        return
    sample = list(dict.fromkeys([seen_here[0], *(os.path.dirname(path) for path in seen_here)]))[:256]
    for node, missing in ray.get([actor.missing.remote(sample) for actor in actors]):
        if missing:
            raise BadInputError(
                f"{missing[0]}: not found on the Ray node {node}; inputs must be readable at the same path on "
                "every node (a shared file system)"
            )


def _stream(ray, actors: list, todo: Sequence[tuple[int, Path]], size: int) -> Iterator[tuple[int, Any]]:
    """Outcomes as they finish; the inputs of a batch whose actor died are retried one by one, alone.

    A death cannot be pinned on one input of a batch, or on the running task
    rather than one queued behind it, so every input it took becomes a
    suspect. A suspect runs alone on an idle actor: a death then is its own,
    and an input that kills its worker `ATTEMPTS` times alone fails by itself.
    """
    waiting = deque(list(todo[start : start + size]) for start in range(0, len(todo), size))
    suspects: deque[tuple[int, Path]] = deque()
    busy = [0 for _ in actors]  # unfinished tasks per actor
    running: dict = {}  # ObjectRef -> (actor number, batch, whether it runs alone)
    attempts = Counter[int]()
    while waiting or suspects or running:
        for number, actor in enumerate(actors):
            if suspects and not busy[number]:
                entry = suspects.popleft()
                running[actor.run.remote([entry])] = (number, [entry], True)
                busy[number] = IN_FLIGHT  # nothing else until it is done
            while waiting and not suspects and busy[number] < IN_FLIGHT:
                batch = waiting.popleft()
                running[actor.run.remote(batch)] = (number, batch, False)
                busy[number] += 1
        [ready], _ = ray.wait(list(running), num_returns=1)
        number, batch, alone = running.pop(ready)
        busy[number] = 0 if alone else busy[number] - 1
        try:
            yield from ray.get(ready)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError):
            for entry in batch:
                attempts[entry[0]] += alone
                if attempts[entry[0]] < ATTEMPTS:
                    suspects.append(entry)
                else:
                    yield (
                        entry[0],
                        BadInputError(f"the Ray worker died each of the {ATTEMPTS} times it ran alone", entry[1]),
                    )
        except ray.exceptions.RayTaskError as err:  # a bug in the job: the driver fails as a local run would
            raise err.as_instanceof_cause() from None


class _Worker:
    """A Ray actor holding one set-up job; plain class, made remote in `_start_actors`."""

    def __init__(self, job: Job, cwd: str):
        self.job = job
        self.ready = False
        if os.path.isdir(cwd):  # relative input paths then name the same files, and errors read as locally
            os.chdir(cwd)

    def setup(self) -> None:
        if not self.ready:
            self.job.setup()
            self.ready = True

    def missing(self, paths: list[str]) -> tuple[str, list[str]]:
        return socket.gethostname(), [path for path in paths if not os.path.exists(path)]

    def run(self, batch: list[tuple[int, Path]]) -> list[tuple[int, Any]]:
        self.setup()  # again after Ray restarted this actor
        return [(position, _portable(outcome)) for position, outcome in computed(self.job, batch)]


def _portable(outcome: Any) -> Any:
    """Errors cross back as plain `BadInputError`s with their message (any class would need importing)."""
    return BadInputError(str(outcome)) if isinstance(outcome, BaseException) else outcome
