"""seglab: an experiment platform for microscopy image segmentation.

The numerical core (``seglab.tiling``, ``seglab.resize``, ``seglab.d4``, ``seglab.intensity``,
``seglab.metrics``, ``seglab.phantoms``, ``seglab.io``) depends on numpy, scipy and scikit-image
only; torch, MONAI, MLflow, Optuna and Typer are imported by the outer layers, lazily.
"""

__version__ = "0.1.0"
