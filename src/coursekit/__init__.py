"""coursekit: the models, data and tools behind the course on generative image models.

The package is the source of truth for every chapter: notebooks import from here and never
paste a second copy of a model.
"""

from coursekit.device import get_device, seed_everything

__version__ = "0.1.0"
__all__ = ["get_device", "seed_everything", "__version__"]
