"""The ``seglab`` command line: thin Typer commands over :mod:`seglab.workflows`."""
