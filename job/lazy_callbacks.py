"""Trainer callbacks made on first use, so that importing a module that defines one does not import transformers."""

from __future__ import annotations

from typing import Any


def lazy_callback(module_globals: dict[str, Any], name: str, wanted: str, mixin: type) -> type:
    """Class ``wanted``: ``mixin`` + transformers' ``TrainerCallback``, cached in the module (for ``__getattr__``)."""
    if name != wanted:
        raise AttributeError(f"module {module_globals['__name__']!r} has no attribute {name!r}")
    from transformers import TrainerCallback

    namespace = {"__module__": module_globals["__name__"], "__doc__": mixin.__doc__}
    cls = type(name, (mixin, TrainerCallback), namespace)
    module_globals[name] = cls
    return cls
