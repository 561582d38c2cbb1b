"""DataLoader workers that outlive a SIGTERM sent to the whole process group.

Slurm, systemd and ``timeout`` signal every process of the job, DataLoader workers included. torch's workers die of
SIGTERM, and the main process's SIGCHLD handler then raises ``DataLoader worker (pid N) is killed by signal:
Terminated`` in the middle of the step whose checkpoint SIGTERM asked for. A worker that ignores SIGTERM keeps
serving batches while the main process finishes the step and saves. Since it also ignores the SIGTERM with which
the main process's exit would end it, the main process stops the workers itself before exiting
([`stop_persistent_workers`], and at exit [`kill_leftover_workers`] for any worker still running then); a worker
whose main process is gone (SIGKILL) exits by itself (torch's workers watch their parent).
"""

from __future__ import annotations

import atexit
import multiprocessing
import signal
import weakref
from collections.abc import Callable

from torch.utils.data import DataLoader

# The loaders whose workers ignore SIGTERM, so that their persistent workers can be stopped before the process exits.
_LOADERS: weakref.WeakSet[DataLoader] = weakref.WeakSet()


class SigtermIgnoredInWorker:
    """A DataLoader ``worker_init_fn`` that makes the worker ignore SIGTERM, then runs ``init_fn`` (if any).

    torch installs its own SIGTERM handler in each worker before ``worker_init_fn`` runs; this replaces it. A class,
    not a closure, so that workers started by ``spawn`` or ``forkserver`` can unpickle it.
    """

    def __init__(self, init_fn: Callable[[int], None] | None) -> None:
        self.init_fn = init_fn

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.init_fn is not None:
            self.init_fn(worker_id)


def workers_ignore_sigterm(loader: DataLoader) -> DataLoader:
    """``loader``, whose workers (started at its next iteration) ignore SIGTERM; unchanged without workers.

    accelerate's prepared loaders iterate the DataLoader they wrap (``base_dataloader``): that one is changed."""
    inner = getattr(loader, "base_dataloader", loader)
    if inner.num_workers > 0 and not isinstance(inner.worker_init_fn, SigtermIgnoredInWorker):
        inner.worker_init_fn = SigtermIgnoredInWorker(inner.worker_init_fn)
        _LOADERS.add(inner)
    return loader


def stop_persistent_workers() -> None:
    """Stops the persistent workers of every loader passed to [`workers_ignore_sigterm`].

    At interpreter exit torch leaves its workers to ``multiprocessing``, which ends them with SIGTERM and then waits
    for them without a timeout: workers that ignore SIGTERM must be stopped before, the way torch stops them when a
    loader is deleted (a loader without persistent workers stops its workers when its iterator goes away)."""
    for loader in list(_LOADERS):
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None


def kill_leftover_workers() -> None:
    """Kills this process's daemonic children (DataLoader workers) that are still running.

    Registered to run at exit, before ``multiprocessing`` ends its daemonic children with SIGTERM and waits for them
    without a timeout, which would wait forever for workers that ignore SIGTERM. Every daemonic child is taken, not
    only the workers of live iterators: torch ends a worker that does not stop in time with SIGTERM, so a worker of
    an iterator already deleted can outlive it. Daemonic children end at exit in any case; this only makes it sure."""
    for child in multiprocessing.active_children():
        if child.daemon and child.is_alive():
            child.kill()
            child.join()


# Registered after torch's and multiprocessing's exit hooks, so it runs before them.
atexit.register(kill_leftover_workers)


__all__ = ["SigtermIgnoredInWorker", "kill_leftover_workers", "stop_persistent_workers", "workers_ignore_sigterm"]
