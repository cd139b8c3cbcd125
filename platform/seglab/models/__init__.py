"""Trained bundles as MLflow models: the pyfunc wrapper, logging, the registry and its gate.

Import the submodules (:mod:`seglab.models.pyfunc`, :mod:`seglab.models.publish`,
:mod:`seglab.models.registry`); they import MLflow, which this package's ``__init__`` does not.
"""
