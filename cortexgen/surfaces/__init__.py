"""Cortical surfaces: tissue segmentation, template meshes fitted to each subject, signed distance volumes."""
