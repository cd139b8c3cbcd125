"""Thin MONAI transforms (array + dictionary pairs) over the numerical core."""
