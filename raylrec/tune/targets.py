"""What a sweep can tune: every registered method and ID backbone (raylrec/methods/registry.py), by the name a
space file's `method:` gives.

A registry entry tells a sweep how to build the method's config from a preset plus overrides, which stage is the
one being selected (its per-epoch validation metric drives ASHA, its metrics_valid.json the selection, its
metrics_test.json the seed re-runs), how to run the method into a run directory, and which artifacts every trial
may share instead of recomputing (the prepared data; for PAD also the phase-1 backbone and the item text
embeddings, which the space must then leave alone). A method that registers itself is a sweep target.
"""

from __future__ import annotations

from raylrec.errors import RaylrecError
from raylrec.methods.registry import MethodSpec, registered


def targets() -> dict[str, MethodSpec]:
    """Every method and ID backbone a sweep can tune, by name."""
    return registered()


def get_target(method: str) -> MethodSpec:
    found = targets()
    if method not in found:
        raise RaylrecError(
            f"no sweep target for method {method!r} (registered: {', '.join(found)}); a method "
            "registers itself in its package's __init__.py (docs/extending.md)"
        )
    return found[method]
