"""Trainers of the project, registered in TRAINER_REGISTRY when imported (from the repository root).

Every module of this package is one method and is imported here, so adding a method is adding a
file.  A module may define ``add_config(cfg)`` adding its ``TRAINER.<NAME>`` keys; ``extend_cfg``
calls them all, so every YAML and command-line option of every method merges into one config tree.
"""
import importlib
import pkgutil

TRAINER_MODULES = tuple(
    importlib.import_module(f"{__name__}.{module.name}")
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
    if not module.name.startswith("_")
)


def extend_cfg(cfg) -> None:
    for module in TRAINER_MODULES:
        if callable(getattr(module, "add_config", None)):
            module.add_config(cfg)
