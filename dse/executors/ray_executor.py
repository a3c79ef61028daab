"""The Ray executor: evaluations on worker actors, on this machine or on a cluster.

Each worker is an actor that receives the evaluator once (data, quantized network, kernels,
hardware flow settings) and evaluates many configurations. The driver keeps at most
``max_in_flight`` evaluations running, collects whichever finishes first, and is the only one
that writes to the trial store. Requested CPUs and GPUs are checked against the cluster before
anything is submitted (Ray itself would wait forever for an impossible request). A worker that
dies mid-evaluation is restarted and the evaluation retried (``max_retries``), the attempt
counted; an evaluation past ``timeout_s`` is cancelled (its worker restarted) and recorded as
failed; an evaluation that raises is a failed trial with its message. A local Ray instance the
executor starts ends with it on every path: ``close``, an error while starting, and a driver
killed outright (a guardian process then ends Ray's agents and workers).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dse.executors import guardian
from dse.executors.base import Executor, ExecutorError, Outcome, evaluate_safely
from dse.executors.resources import check_resources, ray_temp_dir, with_auth_hint
from dse.strategies import Proposal

POLL_S = 0.2
READY_TIMEOUT_S = 300.0
GUARDIAN_EXIT_S = 10.0


class EvaluationWorker:
    """A Ray actor: one evaluator kept resident for many evaluations."""

    def __init__(self, evaluator, threads: int) -> None:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        self.evaluator = evaluator

    def pid(self) -> int:
        return os.getpid()

    def evaluate(self, proposal: Proposal, role: str, context=None) -> Outcome:
        return evaluate_safely(self.evaluator, proposal, role, context)


@dataclass
class _Task:
    proposal: Proposal
    role: str
    context: object
    worker: int
    attempts: int
    submitted: float
    started: dt.datetime


class RayExecutor(Executor):
    def __init__(self, evaluator, settings, folder: Path, log=print) -> None:
        try:
            import ray  # optional (pip install 'dse[ray]'): imported only when a study uses it
        except ImportError:
            raise ExecutorError("executor type ray needs Ray: pip install 'dse[ray]'") from None
        self._ray = ray
        self.settings = settings
        self.log = log
        self._owns_ray = not ray.is_initialized()
        self._guardian: subprocess.Popen | None = None
        started = time.monotonic()
        try:
            if self._owns_ray:
                self._connect(folder)
            self._start_workers(evaluator)
        except BaseException:  # Ray that cannot start, an impossible request, Ctrl-C
            self.close()
            raise
        self.startup_s = time.monotonic() - started
        log(f"{settings.workers} Ray workers ready after {self.startup_s:.1f} s")
        self.slots = settings.max_in_flight or settings.workers
        self._tasks: dict = {}
        self._down: dict = {}  # worker index -> pending ping of a restarting worker
        self._waiting: list[_Task] = []  # new or retried evaluations waiting for a live worker

    def _start_workers(self, evaluator) -> None:
        ray, settings = self._ray, self.settings
        self.preflight()
        self.log(f"starting {settings.workers} Ray workers (each loads the evaluator)")
        options = {"num_cpus": settings.cpus_per_worker, "num_gpus": settings.gpus_per_worker,
                   "max_restarts": -1, "max_task_retries": 0}
        worker_class = ray.remote(EvaluationWorker).options(**options)
        self._shared = ray.put(evaluator)  # kept referenced: restarted workers need it again
        threads = max(1, math.ceil(settings.cpus_per_worker))
        self.workers = [worker_class.remote(self._shared, threads) for _ in range(settings.workers)]
        try:
            self.pids = ray.get([w.pid.remote() for w in self.workers], timeout=READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ExecutorError(f"Ray workers did not start within {READY_TIMEOUT_S:g} s") from None

    def _connect(self, folder: Path) -> None:
        ray, s = self._ray, self.settings
        quiet = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
        try:
            if s.address is None:
                temp_dir = ray_temp_dir(s.temp_dir, folder)
                self.log(f"starting a local Ray instance (session folder in {temp_dir})")
                context = ray.init(_temp_dir=temp_dir, **quiet)
                self._guardian = guardian.start(context.address_info["session_dir"])
            else:
                self.log(f"connecting to the Ray cluster at {s.address}")
                ray.init(address=s.address, **quiet)
        except Exception as err:  # unreachable address, refused connection, bad URL
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            where = s.address or "a local Ray instance"
            raise ExecutorError(with_auth_hint(f"cannot start Ray ({where}): {reason}")) from None

    def preflight(self) -> None:
        """Fail within seconds when the live cluster cannot host the requested workers."""
        nodes = [n["Resources"] for n in self._ray.nodes() if n.get("Alive")]
        check_resources(self.settings, self._ray.cluster_resources(), nodes, "the Ray cluster")

    @property
    def in_flight(self) -> int:
        return len(self._tasks) + len(self._waiting)

    def _least_busy(self) -> int:
        """The live worker with the fewest evaluations."""
        load = [0] * len(self.workers)
        for task in self._tasks.values():
            load[task.worker] += 1
        live = [w for w in range(len(self.workers)) if w not in self._down]
        return min(live, key=lambda w: load[w])

    def _dispatch(self) -> None:
        """Start waiting evaluations on live workers (none while every worker restarts)."""
        while self._waiting and len(self._down) < len(self.workers):
            self._launch(self._waiting.pop(0))

    def _mark_down(self, worker: int) -> None:
        if worker not in self._down:
            self._down[worker] = self.workers[worker].pid.remote()

    def _launch(self, task: _Task) -> None:
        task.worker = self._least_busy()
        task.submitted = time.monotonic()
        ref = self.workers[task.worker].evaluate.remote(task.proposal, task.role, task.context)
        self._tasks[ref] = task

    def submit(self, proposal: Proposal, role: str, context=None) -> None:
        self._waiting.append(_Task(proposal, role, context, -1, 1, time.monotonic(),
                                   dt.datetime.now()))
        self._dispatch()

    def next_outcome(self) -> Outcome:
        ray = self._ray
        while True:
            pings = {ref: w for w, ref in self._down.items()}
            ready, _ = ray.wait(list(self._tasks) + list(pings), num_returns=1, timeout=POLL_S)
            if not ready:
                if (outcome := self._time_out()) is not None:
                    return outcome
                continue
            ref = ready[0]
            if ref in pings:  # a restarted worker answers again
                worker = pings[ref]
                del self._down[worker]
                try:
                    self.pids[worker] = ray.get(ref)
                except ray.exceptions.RayError:
                    self._mark_down(worker)
                self._dispatch()
                continue
            task = self._tasks.pop(ref)
            try:
                outcome = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                self._mark_down(task.worker)
                if task.attempts <= self.settings.max_retries:
                    self.log(f"worker {task.worker} died evaluating {task.proposal.config}; "
                             f"retrying (attempt {task.attempts + 1})")
                    task.attempts += 1
                    self._waiting.append(task)
                    self._dispatch()
                    continue
                return Outcome(task.proposal, task.role, task.started, attempts=task.attempts,
                               error=f"worker died on every attempt ({task.attempts}): "
                                     f"{type(err).__name__}")
            outcome.attempts = task.attempts
            return outcome

    def _time_out(self) -> Outcome | None:
        limit = self.settings.timeout_s
        if limit is None:
            return None
        now = time.monotonic()
        for ref, task in list(self._tasks.items()):
            if now - task.submitted > limit:
                del self._tasks[ref]
                self._ray.kill(self.workers[task.worker], no_restart=False)  # restarts it
                self._mark_down(task.worker)
                return Outcome(task.proposal, task.role, task.started, attempts=task.attempts,
                               error=f"timed out after {limit:g} s (evaluation cancelled)")
        return None

    def close(self) -> None:
        ray = self._ray
        try:
            for worker in getattr(self, "workers", []):
                ray.kill(worker, no_restart=True)
        finally:
            self.workers = []
            self._tasks = {}
            self._waiting = []
            if self._owns_ray and ray.is_initialized():
                ray.shutdown()
            self._release_guardian()

    def _release_guardian(self) -> None:
        """Let the guardian end whatever of the session ``ray.shutdown`` left, and reap it."""
        if self._guardian is None:
            return
        self._guardian.stdin.close()
        try:
            self._guardian.wait(timeout=GUARDIAN_EXIT_S)
        except subprocess.TimeoutExpired:
            self._guardian.kill()
            self._guardian.wait()
        self._guardian = None
