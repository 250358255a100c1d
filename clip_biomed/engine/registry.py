"""Name -> class registries (Dassl's ``Registry``) and the "do you mean" lookup check."""
import difflib

__all__ = ["Registry", "check_availability", "get_most_similar_str_to_a_from_b", "build_registered"]


def get_most_similar_str_to_a_from_b(a, b):
    """Return the string in ``b`` most similar to ``a`` (difflib ratio; ties go to the later one)."""
    best, best_ratio = None, -1.0
    for candidate in b:
        ratio = difflib.SequenceMatcher(None, a, candidate).ratio()
        if ratio >= best_ratio:
            best, best_ratio = candidate, ratio
    return best


def check_availability(requested, available):
    """Raise ValueError naming the valid choices (and the closest one) if ``requested`` is not one of them."""
    if requested not in available:
        guess = get_most_similar_str_to_a_from_b(requested, available)
        raise ValueError(
            f"The requested one is expected to belong to {available}, "
            f"but got [{requested}] (do you mean [{guess}]?)"
        )


class Registry:
    """Maps ``obj.__name__`` to ``obj``; ``register`` works as ``@R.register()`` or ``R.register(obj)``."""

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj, force=False):
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj=None, force=False):
        if obj is None:
            def wrapper(fn_or_class):
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class
            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError(
                f'Object name "{name}" does not exist in "{self._name}" registry; '
                f"registered names: {self.registered_names()}"
            )
        return self._obj_map[name]

    def registered_names(self):
        return list(self._obj_map.keys())


def build_registered(registry, name, what, verbose, *args, **kwargs):
    """Instantiate ``registry``'s class ``name`` (an unknown name raises the error listing the valid
    ones) after printing Dassl's ``Loading <what>: <name>`` line when ``verbose``."""
    check_availability(name, registry.registered_names())
    if verbose:
        print(f"Loading {what}: {name}")
    return registry.get(name)(*args, **kwargs)
