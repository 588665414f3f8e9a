"""walkreg: Contrastive Random Walk correspondences for temporally consistent video edits.

Core API (torch, numpy, safetensors and PyAV only; the Diffusers integration lives in ``walkreg.pipelines`` and the
trainer in ``walkreg.train``). Where things live:

- :mod:`walkreg.encoder`: :class:`CRWEncoder`, frames ``(B, T, 3, H, W)`` in [0, 1] -> features
  ``(B, C, T, H/8, W/8)``.
- :mod:`walkreg.features`: :func:`create_features`, every feature extractor by name (the bundled encoder, an encoder
  directory, random-init encoders, raw Lab or RGB pixels).
- :mod:`walkreg.cells`: the stride-8 cell grid that all features share.
- :mod:`walkreg.walks`: transitions between frames and the walks made of them (:func:`transition_matrix`,
  :func:`local_transitions`, composition, carrying values, round-trip confidence).
- :mod:`walkreg.loss`: :func:`walk_back_loss`, the palindrome contrastive random-walk loss.
- :mod:`walkreg.propagation`: :func:`propagate`, label / latent propagation through a clip, streaming.
- :mod:`walkreg.scoring`, :mod:`walkreg.stabilize`, :mod:`walkreg.flow`: consistency scores, post-hoc
  stabilisation, and the classical optical-flow baseline.
- :mod:`walkreg.video`: PyAV reading and writing, frame folders, DAVIS layout; :mod:`walkreg.atomic`: safe writes.
- :mod:`walkreg.cli`: the ``walkreg`` command line, one module per command.
"""

import importlib


__version__ = "0.1.0"

# Public names and the module each comes from. They load on first use, so that the command line (``walkreg
# --help``) starts without importing torch.
_EXPORTS = {
    "CRWEncoder": "walkreg.encoder",
    "PropagationConfig": "walkreg.propagation",
    "SparseTransitions": "walkreg.walks",
    "WalkBackOutput": "walkreg.loss",
    "create_features": "walkreg.features",
    "local_transitions": "walkreg.walks",
    "local_transitions_both_ways": "walkreg.walks",
    "propagate": "walkreg.propagation",
    "transition_matrix": "walkreg.walks",
    "walk_back_loss": "walkreg.loss",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'walkreg' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
