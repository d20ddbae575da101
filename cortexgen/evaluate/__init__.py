"""Evaluation of synthetic images: set metrics, paired fidelity, cortical cycle consistency."""
