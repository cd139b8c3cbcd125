"""Studies: recipes run as a parent MLflow run with one child run per training or trial.

:func:`seglab.studies.recipes.load_recipe` reads a recipe; :func:`run_recipe` runs it with the
module of its kind (:mod:`~seglab.studies.tiling`, :mod:`~seglab.studies.ablation`,
:mod:`~seglab.studies.search`, :mod:`~seglab.studies.postprocess`). Nothing is imported at
import time beyond the recipe parser.
"""
