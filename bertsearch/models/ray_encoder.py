"""Encoding through Ray Data: the same encoder, its `encode` spread over a pool of Ray actors.

`RayEncoder` wraps the local encoder. Everything the chunker asks (dim, max_tokens, token_spans, input_tokens,
fingerprint) is answered by the local one; `encode` sends the texts through `ray.data.from_items(...)
.map_batches(EncodeActor, compute=ActorPoolStrategy(...))`, where each actor loads the same model (by name or
folder, with the same device, precision and backend settings) once, and the vectors come back by position, in
input order. On one machine `ray.init("local")` starts a Ray here and runs the same code; an address joins an existing
cluster, one GPU per actor where it has GPUs: `HEAD:6379` or `auto` as a driver of the cluster, `ray://HEAD:10001`
through Ray Client, where a task in the cluster drives the pipeline (Ray Data does not run over Ray Client). Every
node needs bertsearch and the model: a model folder at the same path, or the packaged default.

The vectors equal the local encoder's as far as the model's arithmetic is batch-invariant: in fp32 they agree to
about 1e-7 (SciFact: 1.6e-7 at most, the same nDCG@10), while bfloat16 autocast (`--precision auto` on a CPU with
native bf16) rounds differently as a batch's padding changes, by up to about 1e-3 (SciFact: cosine above 0.99998,
nDCG@10 within 0.0001), as indexing with another `--batch-size` does on one machine. See
docs/measurements/ray.md.

Ray Data starts a new actor pool (and so loads the model again) for every `encode` call, seconds of start-up, so
`preferred_batch` asks `Ingest` for larger document batches, and a call of fewer than `local_below` texts (a
query, a tiny add) runs on the local encoder. Ray is initialised once per process and stays up (`ray.shutdown()`
ends it); `ray` is imported only here, when asked for.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import BadArgument, BertsearchError, MissingDependency, ModelMismatch

log = logging.getLogger(__name__)

LOCAL = "local"
"""The `address` that starts Ray on this machine (`--ray` with no value)."""

QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DATA_LOG_LEVEL": "CRITICAL", "RAY_BACKEND_LOG_LEVEL": "fatal"}
"""Set (unless already set) before Ray is imported: no usage reports, no Ray Data log lines (a failure is raised, with
one line; `-vv` logs Ray's own account of it), and of Ray's core only the line saying its log level was set (else it
logs an error-level notice for every actor pool, about restarting actors whose arguments are in the object store)."""


class RayUnavailable(BertsearchError):
    """Ray could not be started or reached, or encoding on it failed."""


def _import_ray() -> Any:
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    try:
        import ray
        import ray.data
    except ImportError:
        raise MissingDependency("bertsearch[ray]", "--ray (encoding on Ray)") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, with the address in the message, when nothing listens at `host:port` (Ray itself retries for
    30 s on a client address and for minutes on a GCS address, then exits the process)."""
    target = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = target.hostname, target.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        return  # "auto" or another form Ray parses itself
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}); check the address (ray://HEAD:10001 for "
            f"a cluster's client port), that the head node runs ('ray start --head'), and that its port is open; "
            f"nothing was indexed"
        ) from None


def connect(address: str | None = None, *, object_store_mb: int = 256) -> Any:
    """`ray`, initialised: on this machine (`address` None or "local"), or joined to the cluster at `address`.
    Once per process: a Ray already initialised (by this function or the host program) is used as it is."""
    ray = _import_ray()
    address = None if address in (None, LOCAL) else address
    if address is not None:
        _check_reachable(address)
    if ray.is_initialized():
        if address is not None:
            log.info("Ray is already initialised in this process; using it, not %s", address)
        return ray
    if address is not None:
        kwargs: dict[str, Any] = {}
    else:
        kwargs = {"num_cpus": os.cpu_count() or 1, "include_dashboard": False,
                  "object_store_memory": object_store_mb << 20}
    try:
        with warnings.catch_warnings():  # Ray Client warns, then raises: the error below says it once
            warnings.simplefilter("ignore", UserWarning)
            # "local": a new Ray here, never a cluster that `ray start` left on this machine (--ray auto joins that)
            ray.init(address if address is not None else "local", logging_level="ERROR", log_to_driver=False, **kwargs)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError, SystemExit) as e:  # Ray exits if its GCS is silent
        if address is None:
            where, hint = "a local Ray", "see Ray's logs under /tmp/ray"
        else:
            where, hint = f"the Ray cluster at {address}", (
                "check the address (ray://HEAD:10001, HEAD:6379 or auto); if the cluster uses token authentication, "
                "set RAY_AUTH_MODE=token here too, with its token in RAY_AUTH_TOKEN or ~/.ray/auth_token")
        raise RayUnavailable(f"cannot start or join {where}: {e}; {hint}; nothing was indexed") from None
    log.info("ray %s: %s", ray.__version__, ray.cluster_resources())
    return ray


class EncodeActor:
    """One model per Ray actor: `__call__` maps a numpy batch {"pos", "text"} to {"pos", "vector"}."""

    def __init__(self, model: str, device: str | None, precision: str, backend: str, fingerprint: str,
                 batch_size: int) -> None:
        from . import load_encoder

        self.encoder = load_encoder(model, device=device, precision=precision, backend=backend)
        if self.encoder.fingerprint() != fingerprint:
            raise ModelMismatch(f"the model {model} on a Ray worker has fingerprint {self.encoder.fingerprint()}, "
                                f"not the driver's {fingerprint}: install the same weights on every node")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        xb = self.encoder.encode(texts, batch_size=self.batch_size)  # (n, dim) float32
        return {"pos": batch["pos"], "vector": xb}


class RayEncoder:
    """The encoder `local`, its `encode` run by `actors` Ray actors (see the module's docstring).

    `address`: None or "local" starts Ray here; else a cluster address. `actors` defaults to one per GPU when the
    cluster has GPUs, else one per CPU (at half a CPU each, up to 4 CPUs, so that Ray's own tasks are not starved;
    two CPUs each above that). `rows_per_batch`: texts per actor call. `device`, `precision`, `backend` are the
    settings the local encoder was loaded with, for the actors to load theirs alike.
    """

    def __init__(self, local: Any, *, address: str | None = None, device: str | None = None,
                 precision: str = "auto", backend: str = "torch", actors: int | None = None,
                 rows_per_batch: int = 256, local_below: int = 64, stall_timeout_s: float = 600.0) -> None:
        if actors is not None and actors < 1:
            raise BadArgument(f"actors must be > 0, got {actors}")
        if rows_per_batch < 1:
            raise BadArgument(f"rows_per_batch must be > 0, got {rows_per_batch}")
        self.local = local
        self.name = local.name
        self.address = address
        self.device = device
        self.precision = precision
        self.backend = backend
        self.actors = actors
        self.rows_per_batch = rows_per_batch
        self.local_below = local_below
        self.stall_timeout_s = stall_timeout_s
        self.calls = 0  # encode calls that ran on Ray
        self._ray: Any = None
        self._resources: dict[str, Any] = {}

    # -- what the chunker asks: the local encoder answers --------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.local.dim)

    @property
    def max_tokens(self) -> int:
        return int(self.local.max_tokens)

    @property
    def special_tokens(self) -> int:
        return int(self.local.special_tokens)

    def fingerprint(self) -> str:
        return str(self.local.fingerprint())

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return self.local.token_spans(texts)

    def input_tokens(self, texts: list[str]) -> list[int]:
        count = getattr(self.local, "input_tokens", None)
        if count is None:
            return [len(s) + self.special_tokens for s in self.local.token_spans(texts)]
        return list(count(texts))

    # -- Ray ---------------------------------------------------------------------------------------

    def start(self) -> RayEncoder:
        """Initialise Ray (or join the cluster) now, so that a bad address fails before any work; returns self."""
        if self._ray is not None:
            return self
        ray = connect(self.address)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = float(ray.cluster_resources().get("CPU", 1))
        if gpus:
            actors, per = (self.actors or gpus), {"num_gpus": 1, "num_cpus": 1}
        else:
            cpu_each = 0.5 if cpus <= 4 else 2.0
            actors = self.actors or max(1, int(cpus if cpus <= 4 else cpus // cpu_each))
            per = {"num_cpus": cpu_each}
        self._resources = {"actors": actors, **per}
        self._ray = ray
        log.info("encoding on Ray with %d actors, each %s", actors, per)
        return self

    @property
    def pool_size(self) -> int:
        """Actors per `encode` call (starts Ray if needed)."""
        self.start()
        return int(self._resources["actors"])

    @property
    def preferred_batch(self) -> int:
        """Documents per ingestion batch: each call starts an actor pool and loads the model, so a call should
        keep every actor busy for several batches."""
        return max(1024, 4 * self.pool_size * self.rows_per_batch)

    def _model_ref(self) -> str:
        """How an actor names the model: a local folder by its absolute path (workers do not share the driver's
        working directory on a cluster), anything else by its name."""
        p = Path(self.name).expanduser()
        return str(p.resolve()) if p.is_dir() else self.name

    def encode(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        n = len(texts)
        if n < max(self.local_below, 1):
            return self.local.encode(texts, batch_size=batch_size)
        self.start()
        ray = self._ray
        job = {"texts": list(texts), "dim": self.dim, "actors": self._resources["actors"],
               "resources": {k: v for k, v in self._resources.items() if k != "actors"},
               "rows_per_batch": self.rows_per_batch, "stall_timeout_s": self.stall_timeout_s,
               "model": {"model": self._model_ref(), "device": self.device, "precision": self.precision,
                         "backend": self.backend, "fingerprint": self.fingerprint(), "batch_size": batch_size}}
        try:
            if _is_client(ray):  # Ray Data cannot run over Ray Client (ray://): a task in the cluster drives it
                xb = ray.get(ray.remote(num_cpus=0)(encode_on_ray).remote(**job))
            else:
                xb = encode_on_ray(**job)
        except BertsearchError:
            raise
        except Exception as e:  # an actor failed (model missing on a worker, out of memory), or the pipeline stalled
            log.debug("encoding on Ray failed", exc_info=True)
            raise RayUnavailable(f"encoding on Ray failed: {_reason(e)}; the batch being encoded was not "
                                 "written") from e
        self.calls += 1
        return xb  # (n, dim)


def encode_on_ray(texts: list[str], dim: int, actors: int, resources: dict[str, float], rows_per_batch: int,
                  stall_timeout_s: float, model: dict[str, Any]) -> np.ndarray:
    """The vectors of `texts` in input order, from a Ray Data pipeline over an actor pool of `EncodeActor(**model)`.
    Runs in the driver, or (over Ray Client) in a task inside the cluster."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_no_progress_timeout_s = stall_timeout_s  # a starved pipeline fails instead of hanging
    ctx.enable_progress_bars = False  # the caller shows its own progress
    n = len(texts)
    order = sorted(range(n), key=lambda i: -len(texts[i]))  # texts of like length share a batch: less padding
    rows = min(rows_per_batch, math.ceil(n / actors))
    blocks = math.ceil(n / rows)
    ds = ray.data.from_items([{"pos": i, "text": texts[i]} for i in order], override_num_blocks=blocks)
    pool = ray.data.ActorPoolStrategy(size=min(actors, blocks))
    ds = ds.map_batches(EncodeActor, fn_constructor_kwargs=model, compute=pool, batch_size=rows, batch_format="numpy",
                        **resources)
    xb = np.zeros((n, dim), dtype=np.float32)
    got = np.zeros(n, dtype=np.int64)
    for part in ds.iter_batches(batch_format="numpy", batch_size=None):  # in any order: placed by position
        pos = part["pos"].astype(np.int64)
        xb[pos] = part["vector"]
        np.add.at(got, pos, 1)
    if not (got == 1).all():
        raise RayUnavailable(f"Ray returned {int(got.sum())} vectors for {n} texts ({int((got == 0).sum())} missing)")
    return xb  # (n, dim)


def _is_client(ray: Any) -> bool:
    """Whether this process reaches Ray through Ray Client (a ray:// address)."""
    try:
        from ray.util.client import ray as client
    except ImportError:
        return False
    return bool(client.is_connected())


_WORKER_ERROR = re.compile(r"^bertsearch\.[\w.]+\.(\w+): (.+)$", re.MULTILINE)


def _reason(e: BaseException) -> str:
    """One line saying why: a bertsearch error an actor raised (ModelNotFound, ModelMismatch), which reaches the
    driver only as text inside Ray's wrapping of it, or else the first line of Ray's own message."""
    text = str(e)
    found = _WORKER_ERROR.findall(text)
    if found:
        kind, message = found[-1]
        return f"on a worker, {kind}: {message}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
