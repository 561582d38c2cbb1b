"""Launched as one process of each of two simulated nodes: ``starts`` runs start in a fresh shared --output_dir.

Each start goes through ``checkpoint_to_resume`` as run_pretrain.py and run_mim.py do (the shared-storage check, then
the "already exists and is not empty" test). Rank 0 is slow to delete its check file, as a node under load or an NFS
server that shows deletions late would be. Prints one line per start: ``start <i> rank <r>: ok`` or the error.
"""

import os
import sys
import time

from modeling_gpa.training.script import checkpoint_to_resume
from modeling_gpa.training.trainer import GPATrainingArguments

root, starts = sys.argv[1], int(sys.argv[2])
rank = int(os.environ["RANK"])
if rank == 0:
    remove = os.remove

    def slow_remove(path):
        time.sleep(0.3)
        remove(path)

    os.remove = slow_remove

for start in range(starts):
    output_dir = os.path.join(root, f"start{start}")
    args = GPATrainingArguments(output_dir=output_dir, do_train=True, use_cpu=True, report_to="none")
    assert args.device.type == "cpu"  # sets up the process group, as the scripts' start does
    try:
        checkpoint = checkpoint_to_resume(args)
        print(f"start {start} rank {rank}: ok, resumes {checkpoint}", flush=True)
    except ValueError as error:
        print(f"start {start} rank {rank}: {error}", flush=True)
