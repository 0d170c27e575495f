"""Starting and ending this process's torch.distributed groups so that the process exits cleanly.

A gloo group runs worker threads that let go of each collective's tensors just after the
collective returns, and letting go of a tensor Python also holds takes the GIL. A thread that
asks for the GIL while the interpreter shuts down aborts the whole process (SIGABRT, "terminate
called without an active exception") after its work is done. A group joins its threads when its
last reference goes, with the GIL released, so ending the groups while Python still runs, with
nothing else holding them, closes that window. (Token counts are all-reduced over gloo on GPU
runs too, so this is not only a CPU matter.)
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import time
from typing import Any

import torch

# The names torch gives a gloo group's collective and transport threads.
GLOO_THREADS = ("pt_gloo_runloop", "gloo_tcp_loop")


# Modules that bind the default group as a default argument when they are imported: imported
# once a group runs, they keep it alive past destroy_process_group. FSDP imports the first, and
# transformers imports FSDP to load a model; transformers' save_pretrained imports DeepSpeed.
PINNING_MODULES = ("torch.distributed.nn.functional", "deepspeed.comm.torch")


def start(backend: str, **options: Any) -> None:
    """``init_process_group``, after importing what would otherwise pin the default group."""
    for name in PINNING_MODULES:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            continue
        try:
            importlib.import_module(name)
        except ImportError:  # a broken optional install: the run goes on, as it would have
            pass
    torch.distributed.init_process_group(backend, **options)


def end() -> None:
    """Destroys every group and frees them now. Callers first drop what holds a group (a
    DistributedDataParallel wrapper, a sequence-parallel group)."""
    if _uses_gloo():
        # torch < 2.8 destroys a gloo group with the GIL held and joins its threads there; one
        # still letting go of the last collective's tensors waits for the GIL, and neither moves
        # (seen on torch 2.6: about 1 two-rank run in 6 hung at its end). Without the GIL for a
        # moment, the threads finish that first. (torch 2.6 leaves them unnamed: gloo_threads()
        # cannot tell here.)
        time.sleep(0.2)
    torch.distributed.destroy_process_group()
    gc.collect()  # a group held only by a reference cycle goes now, not in the interpreter's shutdown
    if gloo_threads():
        # something else still holds a group: its threads run on, idle once they have let go of
        # the last collective's tensors, which they can do while this thread waits without the GIL
        time.sleep(0.2)


def _uses_gloo() -> bool:
    return torch.distributed.is_initialized() and "gloo" in str(torch.distributed.get_backend_config())


def gloo_threads() -> list[str]:
    """Names of this process's gloo threads still running (Linux; empty where /proc is absent)."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return []
    names = []
    for task in os.listdir(tasks):
        try:
            with open(f"{tasks}/{task}/comm") as comm:
                name = comm.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if name in GLOO_THREADS:
            names.append(name)
    return names
