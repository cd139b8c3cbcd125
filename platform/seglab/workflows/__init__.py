"""The Python API behind each command: phantoms, demo (and, later, train, evaluate, ...)."""
