"""Synthetic images with known ground truth (lung immunofluorescence, SBF-SEM)."""
