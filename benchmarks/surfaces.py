"""Surface stage speed, memory and quality; prints JSON.

    python benchmarks/surfaces.py --results /path/to/workdir/results [--subjects 3] [--unpartitioned]
                                  [--reference-subjects 4] [--save-surfaces DIR]

Reads the preprocessed 1 mm brains (and the 84x128x84 model grid and the affine) that the
workflow wrote under ``--results`` and runs the surface stage's library functions on each,
with config/config.yaml's settings, in one process: AMAP segmentation, the cortex-only
partition (atlas SyN + watershed), the template carried onto the cerebrum and fitted
(``surfaces``), the signed distance volumes and the QC row. For every step: seconds and peak
RSS (MB). The template is built once (a cohort-level job in the workflow) and reported apart.

Quality per subject and hemisphere: the QC row (Euler characteristics, self-intersections,
thickness, area, median / 95th percentile distances of white and pial to their tissue
boundaries and the WM boundary's fraction the white surface leaves over 3 mm away, the CSF
it encloses, cortex vertices in the cerebellum/brainstem, flags) and the mean thickness in the
scan's own space. Across subjects: the shape model's leave-one-out error (9 modes), its parts
along and across the held-out surfaces' normals, and the mean shape's error beside it; and the
held-out error of models of 2, 4, ... training subjects with all their modes (8 random training
sets per held-out subject and size), the floor no number of modes gets under: how it falls with
the cohort's size.

``--unpartitioned`` also fits the surfaces without the partition (the stage before it) and
counts its cortex vertices in the cerebellum/brainstem: the before/after. The hindbrain is
the partition's; the depth is how far (mm) the deepest of them lies inside it.

``--reference-subjects N``: for the first N subjects, an independent reconstruction to
compare with: CAT12's projection-based thickness (cat-surf PBT, with its own sulcal barrier,
on the same cortex-only label but not our skeleton) gives a percentage-position map whose
0.5 isosurface is the central surface; our midthickness against it: ASSD, HD95 (MONAI's
convention: the larger directed 95th percentile) and the fraction of vertices beyond 3 mm.
PBT's PPM = 0.5 is not where the true central surface lies: on a shell phantom with exact
partial volumes (WM ball of 20 mm, 2.5 mm of GM) it lies ~0.5 mm inside it, so the same
comparison is also made against the PPM isosurface at the level the phantom's true central
surface has (``pbt_calibrated``; the phantom's own numbers are in ``pbt_phantom``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.measure import timed
from cortexgen.runtime import limit_threads

STEPS_PER_SUBJECT = ("segment", "partition", "surfaces", "surface_sdf")
LOO_MODES = 9


def pbt_position_map(label, hemi_label_values, partition, affine):
    """cat-surf PBT's percentage-position map (1 at the WM, 0 at the pial boundary) of one
    hemisphere's cortex-only label, on its bounding box: (ppm, box)."""
    import cat_surf
    import numpy as np

    inside = np.isin(partition, hemi_label_values)
    hemi_label = np.where(inside, label, 0.0).astype(np.float32)
    box = tuple(slice(max(int(i.min()) - 3, 0), int(i.max()) + 4) for i in np.nonzero(hemi_label > 0))
    _, ppm, _, _ = cat_surf.vol_thickness_pbt(np.ascontiguousarray(hemi_label[box]),
                                              np.sqrt((affine[:3, :3] ** 2).sum(axis=0)), sulcal_barrier=True)
    return np.asarray(ppm, dtype=np.float32), box


def surface_to_isosurface(mesh, cortex, volume, box, affine, level: float) -> tuple[dict, np.ndarray]:
    """``mesh`` (its cortex vertices) against the ``level`` isosurface of ``volume`` (on ``box``
    of the grid of ``affine``): ASSD, HD95 (the larger directed 95th percentile, as MONAI) and
    the fraction of vertices beyond 3 mm, and each vertex's distance (V,) mm to the isosurface
    (NaN off the cortex). Of the isosurface only the points whose nearest vertex is cortex
    count (the medial wall closes the hemisphere through tissue that is no cortex)."""
    import igl
    import numpy as np
    from skimage.measure import marching_cubes

    from cortexgen.surfaces.mesh import voxel_to_world

    iso, faces, _, _ = marching_cubes(volume, level=level)
    offset = np.array([s.start or 0 for s in box], dtype=np.float64)
    reference = voxel_to_world(iso.astype(np.float64) + offset, affine)
    ours = mesh.vertices[cortex]
    ours_to_ref = np.sqrt(igl.point_mesh_squared_distance(ours, reference, faces.astype(np.int64))[0])
    ref_to_ours_sq, nearest, _ = igl.point_mesh_squared_distance(reference, mesh.vertices, mesh.faces.astype(np.int64))
    ref_to_ours = np.sqrt(ref_to_ours_sq)[cortex[mesh.faces[nearest, 0]]]
    both = np.concatenate([ours_to_ref, ref_to_ours])
    per_vertex = np.full(len(mesh.vertices), np.nan)
    per_vertex[cortex] = ours_to_ref
    return {
        "assd_mm": round(float(both.mean()), 3),
        "hd95_mm": round(float(max(np.percentile(ours_to_ref, 95), np.percentile(ref_to_ours, 95))), 3),
        "beyond_3mm_fraction": round(float(np.mean(ours_to_ref > 3.0)), 4),
    }, per_vertex


def pbt_phantom(white_mm: float = 20.0, grey_mm: float = 2.5, size: int = 60, supersample: int = 4) -> dict:
    """PBT on a shell phantom with exact partial volumes (a WM ball, a GM shell, CSF around):
    the PPM level at the true central surface and how far PPM = 0.5 lies from it."""
    import numpy as np

    from cortexgen.surfaces.fit import sample_at
    from cortexgen.surfaces.mesh import icosphere

    centre = np.array([0.3, -0.4, 0.2])  # off the voxel grid
    affine = np.eye(4)
    affine[:3, 3] = -(size - 1) / 2
    grid = np.indices((size,) * 3, dtype=np.float64).reshape(3, -1) + affine[:3, 3:4]
    steps = (np.arange(supersample) + 0.5) / supersample - 0.5
    wm, gm_wm = np.zeros(grid.shape[1]), np.zeros(grid.shape[1])
    for shift in np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3):
        radius = np.linalg.norm(grid.T + shift - centre, axis=1)
        wm += radius < white_mm
        gm_wm += radius < white_mm + grey_mm
    n = supersample ** 3
    label = (1.0 + gm_wm / n + wm / n).reshape((size,) * 3).astype(np.float32)
    label[np.linalg.norm(grid.T - centre, axis=1).reshape((size,) * 3) > white_mm + grey_mm + 4.0] = 0.0
    partition = (label > 0).astype(np.uint8)
    ppm, box = pbt_position_map(label, [1], partition, affine)
    central = icosphere(5, white_mm + grey_mm / 2, tuple(centre))
    cortex = np.ones(len(central.vertices), dtype=bool)
    box_affine = affine.copy()
    box_affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in box], dtype=np.float64)
    level = float(np.median(sample_at(ppm, box_affine, central.vertices)))
    return {"true_central_level": round(level, 3),
            "ppm_0.5": surface_to_isosurface(central, cortex, ppm, box, affine, 0.5)[0],
            "calibrated": surface_to_isosurface(central, cortex, ppm, box, affine, level)[0]}


def central_surface_distances(midthickness, cortex, label, hemi_label_values, partition, affine,
                              calibrated_level: float | None = None) -> tuple[dict, np.ndarray]:
    """Our midthickness against cat-surf PBT's central surface (PPM = 0.5) of the same
    hemisphere (:func:`surface_to_isosurface`) and, with ``calibrated_level``, against the
    PPM isosurface at that level (``calibrated``); and each vertex's distance (V,) mm to the
    last of the two (NaN off the cortex)."""
    ppm, box = pbt_position_map(label, hemi_label_values, partition, affine)
    result, per_vertex = surface_to_isosurface(midthickness, cortex, ppm, box, affine, 0.5)
    if calibrated_level is not None:
        result["calibrated"], per_vertex = surface_to_isosurface(midthickness, cortex, ppm, box, affine,
                                                                 calibrated_level)
    return result, per_vertex


def run_subject(brain_path: Path, mask_path: Path, grid_path: Path, xfm_path: Path, template, settings: dict,
                unpartitioned: bool, reference: float | None, save_dir: Path | None,
                workers: int = 1) -> tuple[dict, dict]:
    """Run the surface stage on one preprocessed brain; the steps' cost, QC rows and comparisons,
    and the midthickness vertices and thickness per hemisphere (for the shape model).

    ``reference``: compare with cat-surf PBT's central surface, and with its PPM isosurface at
    this (calibrated) level; None: no comparison."""
    import ants
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    from cortexgen.io import voxel_sizes
    from cortexgen.preprocess.register import itk_affine_to_ras
    from cortexgen.surfaces.extract import extract_surfaces, native_thickness
    from cortexgen.surfaces.fit import FitSettings, sample_at
    from cortexgen.surfaces.mesh import save_shape, save_surface
    from cortexgen.surfaces.partition import HEMISPHERE_LABELS, HINDBRAIN, PartitionSettings, cortex_label, \
        cortex_partition, cortex_tissue
    from cortexgen.surfaces.qc import QCLimits, surface_qc, vertices_inside
    from cortexgen.surfaces.sdf import condition_volumes
    from cortexgen.surfaces.segment import segment_tissue
    from cortexgen.surfaces.warp import WarpSettings

    steps: dict = {}
    brain = nib.load(brain_path)
    affine = brain.affine
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    tissue = timed(steps, "segment", segment_tissue, brain.get_fdata(dtype=np.float32), mask, voxel_sizes(brain),
                   iterations=settings["segment"]["iterations"], mrf_weight=settings["segment"]["mrf_weight"],
                   source=brain_path)
    partition = timed(steps, "partition", cortex_partition, tissue.label, affine,
                      PartitionSettings.from_config(settings["partition"]))
    surface_args = (tissue, affine, template, WarpSettings.from_config(settings["warp"]),
                    FitSettings.from_config(settings["fit"]), settings["max_thickness_mm"],
                    settings["repair_self_intersections"])
    results = timed(steps, "surfaces", extract_surfaces, *surface_args, partition=partition, workers=workers)
    grid = nib.load(grid_path)
    volumes = timed(steps, "surface_sdf", condition_volumes, [r.white for r in results.values()],
                    [r.pial for r in results.values()], grid.shape[:3], grid.affine, clip_mm=settings["sdf_clip_mm"])
    hindbrain = partition == HINDBRAIN
    limits = QCLimits.from_config(settings["qc"])
    prefix = brain_path.name.split("_")[0]
    def qc_row(hemi, r):
        hemi_tissue = cortex_tissue(tissue, partition, voxel_sizes(brain), hemi)
        return surface_qc(prefix, hemi, r.white, r.pial, r.midthickness, r.thickness, r.cortex, hemi_tissue.wm,
                          hemi_tissue.gm_wm, hemi_tissue.csf, affine, hindbrain, limits)

    qc_rows = timed(steps, "qc", lambda: [qc_row(hemi, r) for hemi, r in results.items()])
    to_native = itk_affine_to_ras(ants.read_transform(str(xfm_path)))
    qc = {}
    for row in qc_rows:
        r = results[row.hemi]
        entry = {key: (round(value, 4) if isinstance(value, float) else value)
                 for key, value in dataclasses.asdict(row).items() if key not in ("subject", "hemi")}
        entry["native_thickness_mean_mm"] = round(float(native_thickness(r.white, r.pial, to_native)[r.cortex].mean()), 3)
        qc[row.hemi] = entry
    # How deep (mm) inside the hindbrain any cortex vertex lies (0: none inside).
    depth = ndimage.distance_transform_edt(hindbrain).astype(np.float32)

    def hindbrain_counts(surfaces) -> dict:
        counts = {}
        for hemi, r in surfaces.items():
            inside = (vertices_inside(r.white, hindbrain, affine) | vertices_inside(r.pial, hindbrain, affine)) & r.cortex
            deepest = max(float(sample_at(depth, affine, m.vertices[r.cortex]).max()) for m in (r.white, r.pial))
            counts[hemi] = {"vertices": int(inside.sum()), "max_depth_mm": round(max(deepest - 0.5, 0.0), 2)}
        return counts

    entry = {
        "steps": steps,
        "seconds": round(sum(steps[name]["seconds"] for name in STEPS_PER_SUBJECT), 2),
        "peak_rss_mb": max(step["peak_rss_mb"] for step in steps.values()),
        "ribbon_ml": round(float(volumes.ribbon.sum() * np.prod(voxel_sizes(grid)) / 1000.0), 1),
        "affine_scale": round(float(np.linalg.det(to_native[:3, :3]) ** (-1.0 / 3.0)), 3),
        "qc": qc,
        "hindbrain": hindbrain_counts(results),
    }
    if unpartitioned:
        entry["hindbrain_unpartitioned"] = hindbrain_counts(extract_surfaces(*surface_args))
    if reference is not None:
        compared = {hemi: central_surface_distances(r.midthickness, r.cortex,
                                                    cortex_label(tissue.label, partition, hemi),
                                                    HEMISPHERE_LABELS[hemi], partition, affine,
                                                    calibrated_level=reference)
                    for hemi, r in results.items()}
        entry["pbt_central"] = {hemi: summary for hemi, (summary, _) in compared.items()}
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        for hemi, r in results.items():
            for kind in ("white", "pial", "midthickness"):
                save_surface(getattr(r, kind), save_dir / f"{prefix}_hemi-{hemi}_{kind}.surf.gii")
        nib.save(nib.Nifti1Image(partition, affine), save_dir / f"{prefix}_desc-cortex_dseg.nii.gz")
        if reference is not None:
            for hemi, (_, per_vertex) in compared.items():
                save_shape(per_vertex, save_dir / f"{prefix}_hemi-{hemi}_desc-pbtdistance.shape.gii")
    shapes = {hemi: (r.midthickness.vertices, r.thickness, r.midthickness.faces) for hemi, r in results.items()}
    return entry, shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="a workflow's results/ folder (preproc done)")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--subjects", type=int, default=0, help="first N subjects (0 = all)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--unpartitioned", action="store_true", help="also fit without the cortex-only partition")
    parser.add_argument("--reference-subjects", type=int, default=0,
                        help="compare the first N subjects with cat-surf PBT's central surface")
    parser.add_argument("--save-surfaces", type=Path, default=None, help="write the meshes and partitions here, and each compared subject's per-vertex distance to PBT's (calibrated) central surface (desc-pbtdistance.shape.gii)")
    args = parser.parse_args()
    limit_threads(args.threads)

    import numpy as np
    import yaml

    from cortexgen.shape.quality import folding_agreement, generalisation, generalisation_by_training_size
    from cortexgen.surfaces.template import build_template

    config = yaml.safe_load(args.config.read_text())
    settings = config["surfaces"]
    space = config["preprocess"]["template_space"]
    shape = "x".join(str(n) for n in config["preprocess"]["shape"])
    brains = sorted(args.results.glob(f"preproc/*/anat/*_space-{space}_desc-brain_T1w.nii.gz"))
    if args.subjects:
        brains = brains[: args.subjects]
    if not brains:
        sys.exit(f"no preprocessed brains (*_space-{space}_desc-brain_T1w.nii.gz) under {args.results}/preproc")

    template_cost: dict = {}
    phantom = pbt_phantom() if args.reference_subjects else None
    template = timed(template_cost, "surface_template", build_template,
                     settings["template_subdivisions"], settings["template_resolution_mm"])
    subjects, shapes = {}, {}
    for index, brain_path in enumerate(brains):
        prefix = brain_path.name.split(f"_space-{space}")[0]
        entry, shapes[prefix] = run_subject(
            brain_path,
            brain_path.with_name(f"{prefix}_space-{space}_desc-brain_mask.nii.gz"),
            brain_path.with_name(f"{prefix}_space-{space}_res-{shape}_desc-preproc_T1w.nii.gz"),
            brain_path.with_name(f"{prefix}_from-T1w_to-{space}_mode-image_xfm.mat"),
            template,
            settings,
            args.unpartitioned,
            phantom["true_central_level"] if index < args.reference_subjects else None,
            args.save_surfaces,
            args.threads,
        )
        subjects[prefix] = entry
        print(f"{prefix}: {json.dumps(entry)}", file=sys.stderr, flush=True)

    rows = [row for entry in subjects.values() for row in entry["qc"].values()]

    def value_range(key: str) -> list[float]:
        return [min(row[key] for row in rows), max(row[key] for row in rows)]

    def hindbrain_total(key: str) -> dict | None:
        if not all(key in e for e in subjects.values()):
            return None
        return {"vertices_per_hemisphere_max": max(h["vertices"] for e in subjects.values() for h in e[key].values()),
                "vertices_total": sum(h["vertices"] for e in subjects.values() for h in e[key].values()),
                "max_depth_mm": max(h["max_depth_mm"] for e in subjects.values() for h in e[key].values())}

    references = [h for e in subjects.values() for h in e.get("pbt_central", {}).values()]
    loo, loo_parts, folds, by_size = {}, {}, {}, {}
    for hemi in ("L", "R") if len(shapes) >= 2 else ():
        mids = np.stack([shapes[s][hemi][0] for s in shapes])
        thick = np.stack([shapes[s][hemi][1] for s in shapes])
        faces = shapes[next(iter(shapes))][hemi][2]
        agreement = folding_agreement(mids, faces, (thick > 0).all(axis=0))
        folds[hemi] = {key: agreement[key] for key in ("curvature_r_mean", "curvature_r_min")}
        if len(shapes) >= 3:
            result = generalisation(mids, thick, faces, [LOO_MODES], hemi=hemi)
            loo[hemi] = round(result["vertex_error_mm_mean"][0], 3)
            loo_parts[hemi] = {"along_normal": round(result["normal_error_mm_mean"][0], 3),
                               "across_normal": round(result["tangential_error_mm_mean"][0], 3),
                               "mean_shape_alone": round(result["mean_shape_error_mm_mean"], 3)}
            sizes = sorted({k for k in (2, 4, 6, 8, 10) if k < len(shapes) - 1} | {len(shapes) - 1})
            curve = generalisation_by_training_size(mids, thick, faces, sizes, draws=8, seed=0, hemi=hemi)
            by_size[hemi] = {str(k): {"all_modes": round(e, 3), "mean_shape_alone": round(b, 3)} for k, e, b in
                             zip(sizes, curve["vertex_error_mm_mean"], curve["mean_shape_error_mm_mean"])}

    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
        "config": str(args.config),
        "n_subjects": len(subjects),
        "n_vertices_per_hemisphere": rows[0]["n_vertices"],
        "template": template_cost["surface_template"],
        "median_seconds_per_subject": round(statistics.median(e["seconds"] for e in subjects.values()), 2),
        "median_seconds_per_step": {
            name: round(statistics.median(e["steps"][name]["seconds"] for e in subjects.values()), 2)
            for name in (*STEPS_PER_SUBJECT, "qc")
        },
        "max_peak_rss_mb": max(e["peak_rss_mb"] for e in subjects.values()),
        "quality": {
            "euler_characteristics": sorted({row[k] for row in rows for k in
                                             ("euler_characteristic_white", "euler_characteristic_pial")}),
            "self_intersection_fraction_max": max(row["self_intersection_fraction"] for row in rows),
            "flagged_hemispheres": {f"{s}_hemi-{h}": row["flags"] for s, e in subjects.items()
                                    for h, row in e["qc"].items() if row["flags"] != "ok"},
            "hindbrain": hindbrain_total("hindbrain"),
            "hindbrain_unpartitioned": hindbrain_total("hindbrain_unpartitioned"),
            "thickness_mean_mm_range": value_range("thickness_mean_mm"),
            "native_thickness_mean_mm_range": value_range("native_thickness_mean_mm"),
            "native_thickness_mean_mm_median": round(statistics.median(r["native_thickness_mean_mm"] for r in rows), 3),
            "white_to_wm_median_mm_range": value_range("white_to_wm_median_mm"),
            "white_to_wm_p95_mm_range": value_range("white_to_wm_p95_mm"),
            "pial_to_gmwm_median_mm_range": value_range("pial_to_gmwm_median_mm"),
            "pial_to_gmwm_p95_mm_range": value_range("pial_to_gmwm_p95_mm"),
            "white_missed_wm_fraction_range": value_range("white_missed_wm_fraction"),
            "csf_inside_white_ml_range": value_range("csf_inside_white_ml"),
            "area_mm2_range": value_range("area_mm2"),
            "ribbon_ml_range": [min(e["ribbon_ml"] for e in subjects.values()),
                                max(e["ribbon_ml"] for e in subjects.values())],
            "pbt_central": None if not references else {
                "n_hemispheres": len(references),
                **{f"{key}_range": [min(r[key] for r in references), max(r[key] for r in references)]
                   for key in ("assd_mm", "hd95_mm", "beyond_3mm_fraction")},
            },
            "pbt_phantom": phantom,
            "pbt_calibrated": None if not references else {
                **{f"{key}_range": [min(r["calibrated"][key] for r in references),
                                    max(r["calibrated"][key] for r in references)]
                   for key in ("assd_mm", "hd95_mm", "beyond_3mm_fraction")},
            },
            f"shape_model_loo_error_mm_{LOO_MODES}_modes": loo or None,
            # The error's mean parts along the held-out surface's normals (shape) and across them
            # (vertices sliding: correspondence), and the other subjects' mean shape's error.
            f"shape_model_loo_parts_mm_{LOO_MODES}_modes": loo_parts or None,
            # Held-out error by the number of training subjects, all their modes: what more heads would buy.
            "shape_model_heldout_error_mm_by_training_subjects": by_size or None,
            # Correspondence checked against the folds: each subject's mean curvature against the
            # other subjects' mean, per vertex (1: every fold at the same vertices).
            "folding_agreement": folds or None,
        },
        "subjects": subjects,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
