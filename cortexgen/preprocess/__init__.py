"""Preprocessing of raw T1w heads into model-ready MNI-space volumes.

denoise -> N4 -> affine to MNI (head to head) -> skull strip -> normalise and resize.
Each step takes and returns nibabel images; :mod:`cortexgen.preprocess.chain` runs them all on
one head, as the workflow's one rule per head does.
"""
