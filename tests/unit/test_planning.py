"""cortexgen.planning and the shard plan: what the workflow makes, from a config and a few fake scans.

The rules only bind these functions to their own output patterns; the values here are the ones
the demo's dry-run shows (tests/workflow/test_dag.py), worked out without Snakemake.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cortexgen import planning
from cortexgen.bids import Scan
from cortexgen.shards import make_shards, shard_of, shard_subjects, shards_holding, subjects_per_shard
from cortexgen.split import SubjectSplit

IMAGE = "results/preproc/{subdir}/anat/{scan}_desc-preproc_T1w.nii.gz"
FIELD = "results/deform/{subdir}/anat/{scan}_xfm.nii.gz"
# Condition roles and their files' desc and suffix, as rules/surfaces.smk names them.
CONDITION_PATTERNS = {
    role: (f"results/surfaces/{{subdir}}/anat/{{scan}}_desc-{name}.nii.gz",
           f"results/shapes/{{shape}}/{{shape}}_desc-{name}.nii.gz")
    for role, name in (("pialsdf", "pial_sdf"), ("whitesdf", "white_sdf"), ("ribbon", "ribbon_mask"))
}
ATROPHY = {"region": {"type": "box", "low_mm": [-90, -125, -60], "high_mm": [90, -70, 90]}, "fraction": 0.3,
           "taper_mm": 5.0}
# config shape_model as shipped (the keys planning reads).
SHAPE_SETTINGS = {"samples": {"n": 2, "truncation": 2.5, "seed": 0},
                  "interpolation": {"pairs": [], "steps": 1, "method": "slerp"}, "atrophy": [ATROPHY]}


def scan(subject, session=None, **entities):
    return Scan(subject, session, Path(f"/bids/sub-{subject}/anat/sub-{subject}_T1w.nii.gz"),
                tuple(entities.items()))


SCANS = [scan("01"), scan("02", "A"), scan("02", "B"), scan("03"), scan("04", run="2")]
SPLIT = SubjectSplit(train=("sub-01", "sub-02", "sub-04"), held_out=("sub-03",))


def test_scans_of_keeps_every_session_in_scan_order():
    assert [s.prefix for s in planning.scans_of(SCANS, ["sub-02", "sub-04"])] == [
        "sub-02_ses-A", "sub-02_ses-B", "sub-04_run-2"]
    assert planning.scans_of(SCANS, []) == []


def test_format_scan_fills_subdir_and_prefix():
    assert planning.format_scan(IMAGE, SCANS[1]) == "results/preproc/sub-02/ses-A/anat/sub-02_ses-A_desc-preproc_T1w.nii.gz"
    assert planning.scans_paths("{scan}", SCANS[3:]) == ["sub-03", "sub-04_run-2"]


def test_seeded_subset_is_reproducible_ordered_and_keeps_all_within_the_limit():
    items = ["a", "b", "c", "d", "e"]
    assert planning.seeded_subset(items, None, 0) == items
    assert planning.seeded_subset(items, 5, 0) == items
    assert planning.seeded_subset(items, 3, 0) == ["c", "d", "e"]
    assert planning.seeded_subset(iter(items), 3, 0) == ["c", "d", "e"]
    assert planning.seeded_subset(items, 3, 1) != ["c", "d", "e"]
    assert planning.seeded_subset(items, 0, 0) == []


def test_template_scans_draw_at_most_the_limit_of_the_training_scans():
    train = [scan(f"{i:02d}") for i in range(1, 31)]
    study = planning.template_scans(train, {"kind": "study", "subjects": 20, "iterations": 3}, seed=0)
    assert len(study) == 20 and set(study) <= set(train) and study == sorted(study, key=train.index)
    assert study == planning.template_scans(train, {"kind": "study", "subjects": 20}, seed=0)
    assert study != planning.template_scans(train, {"kind": "study", "subjects": 20}, seed=1)
    assert planning.template_scans(train, {"kind": "study", "subjects": None}, seed=0) == train
    assert planning.template_scans(train[:3], {"kind": "study", "subjects": 20}, seed=0) == train[:3]
    assert planning.template_scans(train, {"kind": "space", "subjects": 20}, seed=0) == []


def test_shape_specs_of_the_shipped_config():
    specs = planning.shape_specs(SHAPE_SETTINGS, SPLIT)
    assert specs == {
        "sample0001": {"kind": "sample", "index": 1, "seed": 0, "truncation": 2.5},
        "sample0002": {"kind": "sample", "index": 2, "seed": 0, "truncation": 2.5},
        # By default between the first two training subjects, halfway.
        "interp01to02w050": {"kind": "interpolation", "from": "sub-01", "to": "sub-02", "weight": 0.5,
                             "method": "slerp"},
        "atrophy01": {"kind": "atrophy", **ATROPHY},
        # The unthinned twin of every atrophy.
        "mean": {"kind": "mean"},
    }
    assert list(specs) == ["sample0001", "sample0002", "interp01to02w050", "atrophy01", "mean"]
    assert "mean" not in planning.shape_specs({**SHAPE_SETTINGS, "atrophy": []}, SPLIT)


def test_shape_specs_interpolate_named_pairs_at_every_step_held_out_subjects_included():
    settings = {"samples": {"n": 0, "truncation": 2.5, "seed": 0},
                "interpolation": {"pairs": [["03", "sub-01"]], "steps": 3, "method": "linear"},
                "atrophy": [ATROPHY, {**ATROPHY, "fraction": 0.1}]}
    specs = planning.shape_specs(settings, SPLIT)
    assert list(specs) == ["interp03to01w025", "interp03to01w050", "interp03to01w075", "atrophy01", "atrophy02",
                           "mean"]
    assert [specs[name]["weight"] for name in list(specs)[:3]] == [0.25, 0.5, 0.75]
    assert specs["interp03to01w075"]["from"] == "sub-03" and specs["interp03to01w075"]["method"] == "linear"
    assert specs["atrophy02"]["fraction"] == 0.1


def test_shape_specs_refuse_an_unknown_subject_and_skip_interpolation_without_two_training_subjects():
    settings = {**SHAPE_SETTINGS, "interpolation": {"pairs": [["01", "09"]], "steps": 1, "method": "slerp"}}
    with pytest.raises(ValueError, match=r"interpolation.pairs: \['sub-09'\] not in the dataset"):
        planning.shape_specs(settings, SPLIT)
    one = SubjectSplit(train=("sub-01",), held_out=())
    assert list(planning.shape_specs(SHAPE_SETTINGS, one)) == ["sample0001", "sample0002", "atrophy01", "mean"]


def test_figure_shapes_put_atrophies_and_their_twin_first_and_cap_the_count():
    specs = {f"sample{i:04d}": {"kind": "sample"} for i in range(1, 13)}
    specs.update({"interp01to02w050": {"kind": "interpolation"}, "atrophy01": {"kind": "atrophy"},
                  "atrophy02": {"kind": "atrophy"}, "mean": {"kind": "mean"}})
    shapes = planning.figure_shapes(specs)
    assert len(shapes) == planning.MAX_FIGURE_SHAPES == 12
    assert shapes[:5] == ["atrophy01", "atrophy02", "mean", "sample0001", "sample0002"]
    assert planning.figure_shapes(specs, limit=2) == ["atrophy01", "atrophy02"]


def test_interpolation_scans_are_the_two_subjects_last_scans():
    spec = {"kind": "interpolation", "from": "sub-02", "to": "sub-04"}
    assert [s.prefix for s in planning.interpolation_scans(spec, SCANS)] == ["sub-02_ses-B", "sub-04_run-2"]
    assert planning.interpolation_scans({"kind": "atrophy"}, SCANS) == []


def test_generator_files_per_model_with_and_without_validation():
    patterns = {"images": IMAGE, "fields": FIELD, **{role: pair[0] for role, pair in CONDITION_PATTERNS.items()}}
    train, validation = [SCANS[0], SCANS[4]], [SCANS[3]]
    bridge = planning.generator_files("bridge", train, validation, ["pialsdf"], patterns)
    assert bridge == {
        "images": ["results/preproc/sub-01/anat/sub-01_desc-preproc_T1w.nii.gz",
                   "results/preproc/sub-04/anat/sub-04_run-2_desc-preproc_T1w.nii.gz"],
        "pialsdf": ["results/surfaces/sub-01/anat/sub-01_desc-pial_sdf.nii.gz",
                    "results/surfaces/sub-04/anat/sub-04_run-2_desc-pial_sdf.nii.gz"],
        "val_images": ["results/preproc/sub-03/anat/sub-03_desc-preproc_T1w.nii.gz"],
        "val_pialsdf": ["results/surfaces/sub-03/anat/sub-03_desc-pial_sdf.nii.gz"],
    }
    assert planning.generator_files("ddpm", train, [], ["pialsdf"], patterns) == {"images": bridge["images"]}
    assert planning.generator_files("deform", train, validation, ["pialsdf"], patterns) == {
        "fields": ["results/deform/sub-01/anat/sub-01_xfm.nii.gz", "results/deform/sub-04/anat/sub-04_run-2_xfm.nii.gz"],
        "val_fields": ["results/deform/sub-03/anat/sub-03_xfm.nii.gz"]}


def demo_conditions(max_held_out=200, atrophy_held_out=1):
    """The bridge's conditions as the workflow plans them: the shape model's new cortices and its
    atrophy applied to ``atrophy_held_out`` of the held-out scans the bridge samples."""
    specs = planning.shape_specs(SHAPE_SETTINGS, SPLIT)
    settings = {"conditions": ["pialsdf", "whitesdf"], "sampling": {"max_held_out": max_held_out}}
    held_out = [SCANS[1], SCANS[3]]  # sub-02_ses-A and sub-03 held out
    thinned = planning.held_out_atrophy(planning.bridge_held_out(held_out, settings, 0), specs, atrophy_held_out, 0)
    return planning.bridge_conditions(held_out, {**specs, **thinned}, settings, 0, IMAGE, CONDITION_PATTERNS)


def test_held_out_atrophy_applies_every_atrophy_to_a_seeded_subset_of_the_held_out_scans():
    specs = planning.shape_specs({**SHAPE_SETTINGS, "atrophy": [ATROPHY, {**ATROPHY, "fraction": 0.1}]}, SPLIT)
    held_out = [SCANS[1], SCANS[3]]
    # default_rng(0) keeps the second of two.
    thinned = planning.held_out_atrophy(held_out, specs, 1, 0)
    assert thinned == {
        "sub03atrophy01": {"kind": "held_out_atrophy", "scan": "sub-03", "atrophy": "atrophy01", **ATROPHY},
        "sub03atrophy02": {"kind": "held_out_atrophy", "scan": "sub-03", "atrophy": "atrophy02",
                           **{**ATROPHY, "fraction": 0.1}},
    }
    assert list(planning.held_out_atrophy(held_out, specs, None, 0)) == [
        "sub02sesAatrophy01", "sub02sesAatrophy02", "sub03atrophy01", "sub03atrophy02"]
    assert planning.held_out_atrophy(held_out, specs, 0, 0) == {}
    assert planning.held_out_atrophy(held_out, planning.shape_specs({**SHAPE_SETTINGS, "atrophy": []}, SPLIT),
                                     None, 0) == {}


def test_bridge_conditions_held_out_scans_then_every_new_cortex():
    items = demo_conditions()
    assert [(item["id"], item["label"], item["kind"]) for item in items] == [
        ("sub-02_ses-A", "sub02sesA", "held_out"), ("sub-03", "sub03", "held_out"),
        ("sample0001", "sample0001", "sample"), ("sample0002", "sample0002", "sample"),
        ("interp01to02w050", "interp01to02w050", "interpolation"), ("atrophy01", "atrophy01", "atrophy"),
        ("mean", "mean", "mean"), ("sub03atrophy01", "sub03atrophy01", "held_out_atrophy")]
    assert items[0] == {
        "id": "sub-02_ses-A", "label": "sub02sesA", "kind": "held_out",
        "real": "results/preproc/sub-02/ses-A/anat/sub-02_ses-A_desc-preproc_T1w.nii.gz",
        "noise": "sub02sesA", "twin": "",
        "pialsdf": "results/surfaces/sub-02/ses-A/anat/sub-02_ses-A_desc-pial_sdf.nii.gz",
        "whitesdf": "results/surfaces/sub-02/ses-A/anat/sub-02_ses-A_desc-white_sdf.nii.gz",
    }
    assert items[5] == {"id": "atrophy01", "label": "atrophy01", "kind": "atrophy", "real": "",
                        "noise": "mean", "twin": "mean",
                        "pialsdf": "results/shapes/atrophy01/atrophy01_desc-pial_sdf.nii.gz",
                        "whitesdf": "results/shapes/atrophy01/atrophy01_desc-white_sdf.nii.gz"}
    # A held-out subject's thinned cortex is a new cortex: its volumes follow the shapes' patterns.
    assert items[7] == {"id": "sub03atrophy01", "label": "sub03atrophy01", "kind": "held_out_atrophy", "real": "",
                        "noise": "sub03", "twin": "sub03",
                        "pialsdf": "results/shapes/sub03atrophy01/sub03atrophy01_desc-pial_sdf.nii.gz",
                        "whitesdf": "results/shapes/sub03atrophy01/sub03atrophy01_desc-white_sdf.nii.gz"}
    assert "ribbon" not in items[0]  # only the configured roles


def test_atrophy_twins_share_their_noise_key_and_every_other_item_has_its_own():
    items = demo_conditions()
    noise = {item["label"]: item["noise"] for item in items}
    # Each atrophied cortex shares its twin's key: the mean shape's, the held-out scan's.
    assert noise["atrophy01"] == noise["mean"] == "mean"
    assert noise["sub03atrophy01"] == noise["sub03"] == "sub03"
    others = [key for label, key in noise.items() if label not in ("atrophy01", "sub03atrophy01")]
    assert len(set(others)) == len(others) == 6
    pairs = planning.twin_pairs(items)
    assert [(item["label"], twin["label"]) for item, twin in pairs] == [("atrophy01", "mean"),
                                                                          ("sub03atrophy01", "sub03")]
    assert pairs[1][1] is items[1]
    # Keys are labels, not positions: the same with the held-out scans capped (other positions).
    assert {item["label"]: item["noise"] for item in demo_conditions(max_held_out=1)} == {
        label: key for label, key in noise.items() if label != "sub02sesA"}


def test_bridge_conditions_cap_the_held_out_scans_with_the_seed():
    items = demo_conditions(max_held_out=1)
    # default_rng(0) keeps the second of two.
    assert [item["id"] for item in items] == ["sub-03", "sample0001", "sample0002", "interp01to02w050", "atrophy01",
                                              "mean", "sub03atrophy01"]
    assert [item["id"] for item in demo_conditions(max_held_out=None)][:2] == ["sub-02_ses-A", "sub-03"]


def test_condition_path_of_a_role_the_bridge_does_not_use():
    held_out, atrophy = demo_conditions()[1], demo_conditions()[5]
    by_prefix = {s.prefix: s for s in SCANS}
    assert planning.condition_path(held_out, "ribbon", CONDITION_PATTERNS, by_prefix) == (
        "results/surfaces/sub-03/anat/sub-03_desc-ribbon_mask.nii.gz")
    assert planning.condition_path(atrophy, "ribbon", CONDITION_PATTERNS, by_prefix) == (
        "results/shapes/atrophy01/atrophy01_desc-ribbon_mask.nii.gz")


def test_cycle_items_of_the_configured_kinds_capped_with_the_seed():
    conditions = demo_conditions()
    items = planning.cycle_items(conditions, {"kinds": ["held_out", "atrophy"], "max_items": 50}, 0)
    assert list(items) == ["sub02sesA", "sub03", "atrophy01"]
    assert items["sub03"] is conditions[1]
    # default_rng(0) keeps positions 1 and 2 of three.
    assert list(planning.cycle_items(conditions, {"kinds": ["held_out", "atrophy"], "max_items": 2}, 0)) == [
        "sub03", "atrophy01"]
    assert list(planning.cycle_items(conditions, {"kinds": ["sample"], "max_items": None}, 0)) == [
        "sample0001", "sample0002"]
    assert planning.cycle_items(conditions, {"kinds": [], "max_items": None}, 0) == {}


def test_reference_scans_all_or_held_out_capped_with_the_seed():
    held_out = [SCANS[3]]
    every = planning.reference_scans(SCANS, held_out, {"reference": "all", "max_reference_images": 400}, 0)
    assert every == SCANS
    assert planning.reference_scans(SCANS, held_out, {"reference": "held_out", "max_reference_images": None},
                                    0) == held_out
    capped = planning.reference_scans(SCANS, held_out, {"reference": "all", "max_reference_images": 3}, 0)
    assert [s.prefix for s in capped] == ["sub-02_ses-B", "sub-03", "sub-04_run-2"]


def test_reference_auto_leaves_training_subjects_out_once_enough_are_held_out():
    auto = {"reference": "auto", "reference_min_held_out": 2, "max_reference_images": None}
    assert planning.reference_kind(auto, 1) == "all" and planning.reference_kind(auto, 2) == "held_out"
    assert planning.reference_scans(SCANS, [SCANS[3]], auto, 0) == SCANS
    assert planning.reference_scans(SCANS, SCANS[2:4], auto, 0) == SCANS[2:4]
    # An explicit choice stands whatever the count.
    assert planning.reference_kind({"reference": "all", "reference_min_held_out": 2}, 5) == "all"
    assert planning.reference_kind({"reference": "held_out", "reference_min_held_out": 4}, 1) == "held_out"


def test_sample_names():
    assert planning.sample_names("ddpm", "T1w.nii.gz", 2) == ["results/samples/ddpm/sample-0001_T1w.nii.gz",
                                                             "results/samples/ddpm/sample-0002_T1w.nii.gz"]
    assert planning.sample_names("deform", "T1w.nii.gz", 0) == []


def test_auto_shards_keep_small_cohorts_unsharded_and_cut_large_ones_by_100():
    small = [scan(f"{i:03d}") for i in range(1, 201)]
    assert make_shards(small, subjects_per_shard("auto", len(small))) == {}
    large = [scan(f"{i:03d}") for i in range(1, 251)]
    shards = make_shards(large, subjects_per_shard("auto", len(large)))
    assert {label: len(scans) for label, scans in shards.items()} == {"0001": 100, "0002": 100, "0003": 50}
    assert shards["0002"][0].prefix == "sub-101"
    where = shard_of(shards)
    assert len(where) == 250 and where["sub-001"] == "0001" and where["sub-250"] == "0003"
    # A cohort-level job waits only for the shards that hold its scans, each once, in order.
    assert shards_holding(where, [large[249], large[0], large[1]]) == ["0001", "0003"]
    assert shards_holding(where, []) == []


def test_shard_subjects_mark_the_training_scans():
    assert shard_subjects([SCANS[1], SCANS[3]], {"sub-02_ses-A"}) == [
        {"scan": "sub-02_ses-A", "subdir": "sub-02/ses-A", "train": True},
        {"scan": "sub-03", "subdir": "sub-03", "train": False}]
