"""MLflow: the tracking store, run logging, the model registry and promotion."""
