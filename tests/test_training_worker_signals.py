"""DataLoader workers that ignore SIGTERM, and stop when the main process asks them to."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from modeling_gpa.training.worker_signals import kill_leftover_workers, stop_persistent_workers, workers_ignore_sigterm


class WorkerState(Dataset):
    """Each item: the worker's pid and whether it ignores SIGTERM."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        return torch.tensor([os.getpid(), int(ignored)])


def test_workers_survive_a_sigterm_and_stop_when_asked():
    seeded = []
    loader = DataLoader(
        WorkerState(), batch_size=1, num_workers=2, persistent_workers=True, worker_init_fn=seeded.append
    )
    assert workers_ignore_sigterm(workers_ignore_sigterm(loader)) is loader
    assert loader.worker_init_fn.init_fn == seeded.append  # wrapped once, the original still runs
    items = torch.cat(list(loader))
    pids = sorted(set(items[:, 0].tolist()))
    assert len(pids) == 2 and items[:, 1].tolist() == [1, 1, 1, 1]

    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert sorted(set(torch.cat(list(loader))[:, 0].tolist())) == pids  # the same workers still serve batches

    workers = loader._iterator._workers
    stop_persistent_workers()
    assert loader._iterator is None and not any(worker.is_alive() for worker in workers)


def test_a_loader_without_workers_is_left_alone():
    loader = DataLoader(WorkerState(), batch_size=2)
    assert workers_ignore_sigterm(loader).worker_init_fn is None


def test_workers_of_an_iterator_alive_at_exit_are_killed_before_multiprocessing_waits_for_them():
    """multiprocessing ends daemonic children at exit with SIGTERM, then joins them without a timeout."""
    loader = workers_ignore_sigterm(DataLoader(WorkerState(), batch_size=1, num_workers=2))
    iterator = iter(loader)
    next(iterator)
    workers = iterator._workers
    assert all(worker.is_alive() for worker in workers)
    kill_leftover_workers()
    assert not any(worker.is_alive() for worker in workers)


LEAKED_WORKERS = """
import time
import pytest
import torch
from torch.utils.data import DataLoader
from modeling_gpa.training.worker_signals import workers_ignore_sigterm

class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 100

    def __getitem__(self, index):
        time.sleep(0.05)
        return index

iterator = iter(workers_ignore_sigterm(DataLoader(Slow(), batch_size=2, num_workers=2)))
next(iterator)
workers = iterator._workers
iterator._shutdown = True  # torch's own shutdown is skipped: the workers outlive their iterator
del iterator
assert all(worker.is_alive() for worker in workers)
"""


@pytest.mark.slow
def test_a_process_whose_sigterm_ignoring_workers_outlive_their_iterator_still_exits():
    result = subprocess.run([sys.executable, "-c", LEAKED_WORKERS], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
