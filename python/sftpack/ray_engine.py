"""``sftpack preprocess --engine ray``: the same job on a Ray cluster.

The inputs are split into parts (see :mod:`sftpack.parts`: work units that do not depend on the
number of parts, each read by one part, so every part is deterministic, the parts together read
the corpus about once and the validation split is the unpartitioned run's). Ray
actors prepare the parts — each actor is one process holding the Rust engine, running as many
engine threads as it has CPUs, with the GIL released — and write them to ``OUT.parts/part-NNNNN``
beside the output (a file system every node sees). The driver then joins them into ``OUT`` with
:func:`sftpack.parts.merge_packs`: it only ever holds manifests, never tokens or per-document
state, so its memory does not grow with the corpus.

What happens on failure: an actor that dies is restarted by Ray and its part resumes from its
last committed window (parts are ordinary resumable runs); a driver that dies leaves the parts
done so far, and the same command again skips finished parts ("up to date"), resumes the
interrupted ones and merges. Two runs give identical bytes, whatever the actor count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .settings import PreprocessSettings

Progress = dict[str, Any]


def import_ray() -> Any:
    try:
        import ray  # noqa: PLC0415
    except ImportError as error:
        raise ConfigError("`engine: ray` needs Ray, which is not installed\n"
                          "hint: pip install 'sftpack[ray]'") from error
    return ray


def parts_dir(out: Path) -> Path:
    """Where the parts of a Ray run are written: beside the output, on the same file system (the
    merged shards are hard links to them, so they cost no extra space)."""
    return out.with_name(out.name + ".parts")


def part_dir(out: Path, index: int) -> Path:
    return parts_dir(out) / f"part-{index:05d}"


def _part_settings(settings: PreprocessSettings, parts: int, index: int, threads: int) -> PreprocessSettings:
    job = replace(settings.job, threads=threads)
    return replace(settings, job=job, out=str(part_dir(Path(settings.out), index)), num_shards=parts,
                   shard_index=index, engine="local", progress_interval_ms=60_000)


def _prepare_part(settings: PreprocessSettings) -> dict[str, Any]:
    """Runs in an actor: one part, as an ordinary (resumable) local run."""
    import ray  # noqa: PLC0415

    from .preprocess import run_preprocess  # noqa: PLC0415

    started = time.monotonic()
    result = run_preprocess(settings)
    manifest = result["manifest"]
    return {"status": result["status"], "out": result["out"], "index": settings.shard_index,
            "records": manifest["counts"]["records_read"], "tokens": manifest["counts"]["tokens"],
            "seconds": time.monotonic() - started, "node": os.uname().nodename,
            "node_id": ray.get_runtime_context().get_node_id(),
            "input_bytes_read": result["timing"]["input_bytes_read"]}


def _absolute_map_fn(spec: str | None) -> str | None:
    """A ``file.py:function`` map function with the file made absolute: actors may run elsewhere."""
    if spec is None or ".py:" not in spec:
        return spec
    file, function = spec.rsplit(":", 1)
    return f"{os.path.abspath(file)}:{function}"


def _cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def preprocess_on_ray(settings: PreprocessSettings, progress: Callable[[Progress], object] | None = None
                      ) -> dict[str, Any]:
    """Prepares ``settings`` on Ray (see the module docs); returns what a local run returns, with
    ``ray``: the actors, CPUs per actor and each part's node, time and status."""
    ray = import_ray()
    if settings.num_shards is not None:
        raise ConfigError("`engine: ray` splits the job into parts itself; leave `num_shards` and `shard_index` out")
    settings = replace(settings, out=os.path.abspath(settings.out),
                       job=replace(settings.job, inputs=tuple(p if "://" in p else os.path.abspath(p)
                                                              for p in settings.job.inputs),
                                   tokenizer=os.path.abspath(settings.job.tokenizer),
                                   map_fn=_absolute_map_fn(settings.job.map_fn)))
    started_here = not ray.is_initialized()
    if started_here:
        # Without an address: a local Ray instance on this machine, with the CPUs asked for.
        ray.init(address=settings.ray_address, num_cpus=None if settings.ray_address else settings.job.threads,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        cpus = settings.ray_cpus_per_actor or 1
        actors = settings.ray_actors or max(1, _cluster_cpus(ray) // cpus)
        parts = settings.ray_parts or actors
        worker = ray.remote(num_cpus=cpus, max_restarts=2, max_task_retries=2)(_PartWorker)
        pool = ray.util.ActorPool([worker.remote() for _ in range(min(actors, parts))])
        done = []
        for result in pool.map_unordered(lambda actor, index: actor.prepare.remote(
                _part_settings(settings, parts, index, cpus)), range(parts)):
            done.append(result)
            if progress is not None:
                progress({"parts_done": len(done), "parts": parts, "records": sum(d["records"] for d in done),
                          "tokens": sum(d["tokens"] for d in done)})
    finally:
        if started_here:
            ray.shutdown()
    from .parts import merge_packs  # noqa: PLC0415

    part_dirs = [part_dir(Path(settings.out), i) for i in range(parts)]
    merged = merge_packs(part_dirs, settings.out, overwrite=settings.overwrite)
    merged["ray"] = {"actors": min(actors, parts), "cpus_per_actor": cpus,
                     "parts": sorted(done, key=lambda d: d["index"])}
    if merged["status"] == "done" and all(d["status"] == "up to date" for d in done):
        merged["status"] = "up to date"
    return merged


class _PartWorker:
    """A Ray actor: one process that prepares parts one after another."""

    def prepare(self, settings: PreprocessSettings) -> dict[str, Any]:
        return _prepare_part(settings)
