"""Trainers of the project, registered in TRAINER_REGISTRY when imported (from the repository root).

Each trainer module may define ``add_config(cfg)`` adding its ``TRAINER.<NAME>`` keys; ``extend_cfg``
calls them all, so every YAML and command-line option of every method merges into one config tree.
"""
from . import biomedcoop

TRAINER_MODULES = (biomedcoop,)


def extend_cfg(cfg) -> None:
    for module in TRAINER_MODULES:
        module.add_config(cfg)
