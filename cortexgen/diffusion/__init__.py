"""Diffusion generators: a shape-to-image Brownian bridge, an unconditional DDPM, and a
DDPM over deformation fields, sharing one network builder and one training loop.

The maths lives in short functions (:mod:`~cortexgen.diffusion.bridge`,
:mod:`~cortexgen.diffusion.ddpm`), apart from the network (:mod:`~cortexgen.diffusion.networks`).
"""
