"""Pretraining with the Hugging Face ``Trainer``.

``trainer`` holds `GPATrainer` and its arguments; ``pretraining_trainer`` the base it shares with `SimMIMTrainer`,
whose mixins (listed in `GPATrainer`'s docstring) have one module each: ``mask_schedule`` the schedule's progress,
``seeding`` each process's own randomness, ``startup`` the checks made once before training, ``streaming`` the
loader of a streamed train split, ``device_inputs`` what happens to a batch on the device, ``guards`` the
non-finite, disk-space and SIGTERM guards. ``resume`` says which checkpoint a run resumes from, ``distributed``
holds the checks of a multi-process run, ``worker_signals`` DataLoader workers that outlive a SIGTERM to the process
group, ``flag_ranges`` the allowed range of each numeric flag and ``head_reselection`` the callback that picks the
teacher's head again during training. ``arguments``, ``masking_arguments`` (the mask strategy's flags, generated
from ``GPAConfig``) and ``script`` are what run_pretrain.py and run_mim.py share (flags, logging, train / evaluate
and their one-line exits); ``hub`` writes model cards and pushes checkpoints.

Import from the modules (``from modeling_gpa.training.trainer import GPATrainer``): this file imports nothing, so
loading one module does not load the others.
"""
