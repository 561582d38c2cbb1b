"""Training machinery shared by the scripts that train: trainers' mixins, distributed set-up, resuming."""
