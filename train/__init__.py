"""The CRW trainer (installed as ``walkreg.train``; needs ``pip install 'walkreg[train]'``).

- :class:`TrainConfig`: every setting of a run (official recipe by default), JSON config files.
- :func:`train`: the accelerate training loop (imports accelerate on first use); returns a :class:`TrainResult`.
- ``walkreg train`` / ``accelerate launch -m walkreg train``: the same loop from the command line.
"""

from .config import TrainConfig


__all__ = ["TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'walkreg.train' has no attribute {name!r}")
