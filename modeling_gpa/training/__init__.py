"""Pretraining with the Hugging Face ``Trainer``.

``trainer`` holds `GPATrainer` and its arguments; ``streaming`` the loader of a streamed train split, ``guards`` the
non-finite, disk-space and SIGTERM guards, ``distributed`` the checks of a multi-process run and
``head_reselection`` the callback that picks the teacher's head again during training, ``seeding`` each
process's own randomness, ``resume`` which checkpoint a run resumes from, ``flag_ranges`` the allowed range of each
numeric flag and ``worker_signals`` DataLoader workers that outlive a SIGTERM to the process group. ``arguments``,
``masking_arguments`` (the mask strategy's flags, generated from ``GPAConfig``) and ``script`` are what
run_pretrain.py and run_mim.py share (flags, logging, train / evaluate and their one-line exits); ``hub`` writes model
cards and pushes checkpoints.

Import from the modules (``from modeling_gpa.training.trainer import GPATrainer``): this file imports nothing, so
loading one module does not load the others.
"""
