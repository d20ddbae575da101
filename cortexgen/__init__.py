"""cortexgen: anatomically grounded synthetic brain MRI.

The library owns the science; the Snakemake workflow around it owns the plumbing.
Nothing in this package imports snakemake.
"""

__version__ = "0.1.0"
