"""``agender analyze ... --cluster ADDRESS``: the same outputs, computed on a Ray cluster.

Ray is an optional extra (``pip install agender[cluster]``) and is imported only here, when a
cluster is asked for: the single-machine path never imports it.

* :mod:`agender.cluster.plan` — which frames, cut where (group boundaries, keyframe seeks).
* :mod:`agender.cluster.worker` — the actor: models loaded once, one segment → one table part.
* :mod:`agender.cluster.stitch` — parts → the table; track ids reconciled across boundaries.
* :mod:`agender.cluster.driver` — the job: resume, retries, progress, the sidecar.

Addresses: ``ray://host:port`` (Ray Client), ``host:port`` (a cluster's GCS, on a node of it),
``auto`` (``$RAY_ADDRESS``, else a cluster started on this machine with ``ray start``), and
``local:N`` (start a private Ray here with N workers; stopped at the end; each worker is pinned
to its own ``--cluster-cpus`` cores when they fit, so ``local:1`` measures one worker's share).
"""
from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Iterator

from agender.errors import AgenderError, one_line

ENV_FOR_WORKERS = ("AGENDER_MODELS", "AGENDER_CACHE", "PYTHONPATH", "OPENCV_LOG_LEVEL")


class ClusterError(AgenderError):
    """The cluster cannot be used (Ray missing, address unreachable, no worker): one line."""


@dataclass
class Cluster:
    address: str
    workers: int
    cpus_per_worker: float
    nodes: int
    actors: list[Any] = field(default_factory=list)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray, which is not installed: pip install 'agender[cluster]'") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    a = address.split("://", 1)[-1]
    host, _, port = a.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line, and fast, when nothing listens at ``address`` (Ray itself waits long)."""
    hp = _host_port(address)
    if hp is None:
        raise ClusterError(f"--cluster {address}: not an address (ray://HOST:PORT, HOST:PORT, auto or local:N)")
    try:
        with socket.create_connection(hp, timeout=timeout_s):
            pass
    except OSError as exc:
        why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
            "no answer (timed out)" if isinstance(exc, TimeoutError | socket.timeout) else (exc.strerror or str(exc)))
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({why})") from None


@contextlib.contextmanager
def connect(address: str, *, model_args: dict, workers: int | None = None,
            cpus_per_worker: float = 1.0) -> Iterator[Cluster]:
    """Connect to (or start, for ``local:N``) a Ray cluster and start the worker actors; on exit
    the job ends, its actors with it, and a Ray started here is shut down (also on errors and Ctrl-C)."""
    ray = import_ray()
    env = {k: os.environ[k] for k in ENV_FOR_WORKERS if os.environ.get(k)}
    env.setdefault("AGENDER_THREADS", os.environ.get("AGENDER_CLUSTER_THREADS", str(max(1, int(cpus_per_worker)))))
    runtime_env = {"env_vars": env}
    kw: dict[str, Any] = dict(runtime_env=runtime_env, log_to_driver=False, logging_level="WARNING",
                              configure_logging=True)
    if address.startswith("local:"):
        n = address.split(":", 1)[1]
        if not n.isdigit() or int(n) < 1:
            raise ClusterError(f"--cluster {address}: local:N needs a number of workers (local:2)")
        workers = workers or int(n)
        # A local cluster is one machine: every Ray socket stays on loopback. On Linux Ray
        # otherwise binds its node to the NIC's address (it maps 127.0.0.1 to that address
        # too); its own switch for "no cluster networking" is this variable.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        init = dict(address="local", num_cpus=int(workers * max(1, cpus_per_worker)), include_dashboard=False, **kw)
        target = None
    else:
        target = os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address
        if target != "auto":
            check_reachable(target)
        init = dict(address=target, **kw)
    try:
        ray.init(**init)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors: one line
        msg = one_line(exc, named=False)
        raise ClusterError(f"cannot reach the Ray cluster at {target or address} ({msg})") from None
    try:
        res = ray.cluster_resources()
        cpus = float(res.get("CPU", 0))
        if workers is None:
            workers = max(1, int(cpus // max(cpus_per_worker, 1e-9)))
        if cpus < cpus_per_worker:
            raise ClusterError(f"the Ray cluster at {address} has no CPU to run a worker")
        nodes = sum(1 for nd in ray.nodes() if nd.get("Alive"))
        from agender.cluster.worker import SegmentWorker

        Actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=-1, max_task_retries=3,
                           max_concurrency=2)(SegmentWorker)
        cl = Cluster(address=address, workers=workers, cpus_per_worker=cpus_per_worker, nodes=nodes)
        per = int(max(1, cpus_per_worker))
        pins = [None] * workers
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        if target is None and workers * per <= ncpu:  # local:N: each worker on its own cores, so that
            cores = sorted(os.sched_getaffinity(0))  # N workers measure N times what one worker does
            pins = [cores[k * per:(k + 1) * per] for k in range(workers)]
        cl.actors = [Actor.remote(model_args, per, pins[k]) for k in range(workers)]
        yield cl
    finally:
        # the actors belong to this driver's job: they end with it (a Ray started here stops)
        ray.shutdown()
