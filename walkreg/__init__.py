"""walkreg: Contrastive Random Walk correspondences for temporally consistent video edits.

Core API (torch, numpy, safetensors and PyAV only; the Diffusers integration lives in ``walkreg.pipelines`` and the
trainer in ``walkreg.train``):

- :class:`CRWEncoder`: frames ``(B, T, 3, H, W)`` in [0, 1] -> features ``(B, C, T, H/8, W/8)``.
- :func:`transition_matrix`, :func:`local_transitions`: row-stochastic transitions between two frames.
- :func:`walk_back_loss`: the palindrome contrastive random-walk loss.
- :func:`propagate`: label / latent propagation through a clip, streaming.
- :mod:`walkreg.video`: PyAV reading and writing, frame folders, DAVIS layout.
"""

from walkreg.encoder import CRWEncoder
from walkreg.propagation import PropagationConfig, propagate
from walkreg.walk import SparseTransitions, WalkBackOutput, local_transitions, transition_matrix, walk_back_loss


__version__ = "0.1.0"

__all__ = [
    "CRWEncoder",
    "PropagationConfig",
    "SparseTransitions",
    "WalkBackOutput",
    "local_transitions",
    "propagate",
    "transition_matrix",
    "walk_back_loss",
]
