"""What the workflow makes for a cohort, worked out from the config and the scans found.

Plain functions of config sections and of the scans discovery found
(:class:`cortexgen.bids.Scan`), called by rules/*_inputs.smk while the Snakefile is read: the
new cortices the shape model makes, what each generator trains on, what the bridge samples
from, which of its samples go through cycle consistency, the real images the set metrics
compare with. File names come in as the rules' own output patterns (with ``{subdir}`` and
``{scan}``, or ``{shape}``), so the layout of results/ stays in the rules. Shards of subjects:
:mod:`cortexgen.shards`; the train/held-out split: :mod:`cortexgen.split`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cortexgen.bids import Scan
from cortexgen.diffusion import registry
from cortexgen.split import SubjectSplit, subject_id

#: The thickness figure of the new cortices (rule qc_shapes) shows at most this many of them.
MAX_FIGURE_SHAPES = 12

#: Condition role -> (per-scan pattern, per-shape pattern) of the bridge's condition volumes.
ConditionPatterns = Mapping[str, tuple[str, str]]

#: The id of the mean shape, the unthinned twin of every atrophy of the mean shape.
MEAN_SHAPE = "mean"


def format_scan(pattern: str, scan: Scan) -> str:
    """``pattern`` with its ``{subdir}`` and ``{scan}`` wildcards filled in for ``scan``."""
    return str(pattern).format(subdir=scan.subdir, scan=scan.prefix)


def scans_paths(pattern: str, scans: Iterable[Scan]) -> list[str]:
    """``pattern`` for each of ``scans``, in their order."""
    return [format_scan(pattern, scan) for scan in scans]


def scans_of(scans: Iterable[Scan], subjects: Iterable[str]) -> list[Scan]:
    """The scans of these subjects (``"sub-<label>"``), in scan order."""
    subjects = set(subjects)  # a set: cohorts of tens of thousands
    return [scan for scan in scans if f"sub-{scan.subject}" in subjects]


def seeded_subset(items: Iterable, limit: int | None, seed: int) -> list:
    """At most ``limit`` of ``items`` (None: all of them): a subset drawn with ``seed``, kept in order."""
    items = list(items)
    if limit is None or len(items) <= limit:
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), limit, replace=False))
    return [items[index] for index in keep]


def template_scans(train: Sequence[Scan], settings: Mapping, seed: int) -> list[Scan]:
    """The training scans a study template averages (config ``diffusion.deform.template``):
    ``kind: study``, at most ``subjects`` of them drawn with ``seed``; none for ``kind: space``."""
    if settings["kind"] != "study":
        return []
    return seeded_subset(train, settings["subjects"], seed)


def shape_specs(settings: Mapping, split: SubjectSplit) -> dict[str, dict]:
    """Every new cortex config ``shape_model`` asks for: {shape id: spec}, in the order
    samples, interpolations, atrophies and, when there is an atrophy, the mean shape (their
    unthinned twin; specs as cortexgen/shape/synthesis.py reads them).

    Ids are file-name labels: ``sample0001``, ``interp01to02w050`` (the two subject labels and
    the weight in %), ``atrophy01``, ``mean``. Interpolation pairs default to the first two
    training subjects (none if there are fewer).

    Raises:
        ValueError: an interpolation pair names a subject that is neither training nor held out.
    """
    specs = {}
    for index in range(1, settings["samples"]["n"] + 1):
        specs[f"sample{index:04d}"] = {"kind": "sample", "index": index, "seed": settings["samples"]["seed"],
                                       "truncation": settings["samples"]["truncation"]}
    interpolation = settings["interpolation"]
    pairs = interpolation["pairs"] or ([list(split.train[:2])] if len(split.train) >= 2 else [])
    weights = [(k + 1) / (interpolation["steps"] + 1) for k in range(interpolation["steps"])]
    known = set(split.train + split.held_out)
    for pair in pairs:
        ends = [subject_id(name) for name in pair]
        unknown = [name for name in ends if name not in known]
        if unknown:
            raise ValueError(f"shape_model.interpolation.pairs: {unknown} not in the dataset")
        for weight in weights:
            label = f"interp{ends[0][4:]}to{ends[1][4:]}w{round(100 * weight):03d}"
            specs[label] = {"kind": "interpolation", "from": ends[0], "to": ends[1], "weight": weight,
                            "method": interpolation["method"]}
    for index, atrophy in enumerate(settings["atrophy"], start=1):
        specs[f"atrophy{index:02d}"] = {"kind": "atrophy", **atrophy}
    if settings["atrophy"]:
        specs[MEAN_SHAPE] = {"kind": "mean"}
    return specs


def bridge_held_out(held_out: Sequence[Scan], settings: Mapping, seed: int) -> list[Scan]:
    """The held-out scans the bridge samples: at most ``settings["sampling"]["max_held_out"]``
    of them (a subset drawn with ``seed``; None: all). ``settings``: config diffusion.bridge."""
    return seeded_subset(held_out, settings["sampling"]["max_held_out"], seed)


def held_out_atrophy(held_out: Sequence[Scan], specs: Mapping[str, Mapping], limit: int | None,
                     seed: int) -> dict[str, dict]:
    """Every atrophy of ``specs`` applied to held-out subjects' own cortices: {id: spec}.

    Args:
        held_out: the held-out scans the bridge samples (:func:`bridge_held_out`); their own
            samples are the unthinned twins.
        specs: the new cortices (:func:`shape_specs`); each ``atrophy`` spec is applied.
        limit: at most this many of the scans (a subset drawn with ``seed``; None: all), config
            shape_model.atrophy_held_out.

    Returns:
        ``{"sub03atrophy01": {"kind": "held_out_atrophy", "scan": "sub-03", "atrophy": "atrophy01",
        "region": ..., "fraction": ..., "taper_mm": ...}}``, per scan in scan order, its atrophies
        in spec order. Ids are the scan's sample label (:func:`condition_label`) and the atrophy's id.
    """
    atrophies = {name: spec for name, spec in specs.items() if spec["kind"] == "atrophy"}
    thinned = {}
    for scan in seeded_subset(held_out, limit, seed) if atrophies else []:
        for name, spec in atrophies.items():
            thinned[f"{condition_label(scan)}{name}"] = {
                **spec, "kind": "held_out_atrophy", "scan": scan.prefix, "atrophy": name}
    return thinned


def figure_shapes(specs: Mapping[str, Mapping], limit: int = MAX_FIGURE_SHAPES) -> list[str]:
    """The shape ids the thickness figure shows: atrophies and their twin, the mean shape, first
    (what to look at), then the others, each in spec order; at most ``limit``."""
    return sorted(specs, key=lambda name: specs[name]["kind"] not in ("atrophy", "mean"))[:limit]


def interpolation_scans(spec: Mapping, scans: Iterable[Scan]) -> list[Scan]:
    """The two scans an interpolation spec runs between, ``from`` then ``to`` (none for other
    kinds). A subject with several scans is represented by the last of them in scan order."""
    if spec["kind"] != "interpolation":
        return []
    by_subject = {f"sub-{scan.subject}": scan for scan in scans}
    return [by_subject[spec["from"]], by_subject[spec["to"]]]


def generator_files(model: str, train: Sequence[Scan], validation: Sequence[Scan], roles: Sequence[str],
                    patterns: Mapping[str, str]) -> dict[str, list[str]]:
    """A generator's training volumes and, ``val_``-prefixed, its validation volumes.

    Args:
        model: a generator of :mod:`cortexgen.diffusion.registry`; its entry's
            :meth:`~cortexgen.diffusion.registry.GeneratorEntry.training_roles` say which volumes.
        train, validation: the scans of each set; an empty set gives no entries.
        roles: the condition roles of a conditional generator (config diffusion.<model>.conditions).
        patterns: per-scan patterns of every role: ``images``, ``fields``, and one per condition role.

    Returns:
        {"images": [...], "pialsdf": [...], "val_images": [...], ...} (or "fields", "val_fields").
    """
    files = {}
    for prefix, scans in (("", train), ("val_", validation)):
        if not scans:
            continue
        for role in registry.generator(model).training_roles(roles):
            files[f"{prefix}{role}"] = scans_paths(patterns[role], scans)
    return files


def condition_label(scan: Scan) -> str:
    """A held-out scan's label in sample names: its prefix without ``-`` and ``_`` (``sub01ses1``)."""
    return scan.prefix.replace("-", "").replace("_", "")


def condition_path(item: Mapping, role: str, patterns: ConditionPatterns, scans: Mapping[str, Scan]) -> str:
    """One condition volume of a bridge condition item (held out: its scan's, else its shape's),
    whether or not the bridge uses that role. ``scans``: {prefix: scan}, holding the item's."""
    scan_pattern, shape_pattern = patterns[role]
    if item["kind"] == "held_out":
        return format_scan(scan_pattern, scans[item["id"]])
    return str(shape_pattern).format(shape=item["id"])


def twin_label(spec: Mapping, scans: Mapping[str, Scan]) -> str:
    """The sample label of the unthinned twin of a new cortex ("" if it has none): the mean
    shape for an atrophy, the held-out scan's own sample for a held-out subject's atrophy.
    ``scans``: {prefix: scan}, holding a held-out atrophy's scan."""
    if spec["kind"] == "atrophy":
        return MEAN_SHAPE
    if spec["kind"] == "held_out_atrophy":
        return condition_label(scans[spec["scan"]])
    return ""


def bridge_conditions(held_out: Sequence[Scan], specs: Mapping[str, Mapping], settings: Mapping, seed: int,
                      image_pattern: str, patterns: ConditionPatterns) -> list[dict]:
    """What the bridge samples from, in this order: held-out scans' own condition volumes, then
    every new cortex (the shape model's, and held-out subjects' thinned cortices).

    An atrophied cortex and its unthinned twin share their sampling noise (``noise``: the twin's
    label), so that the difference between their images is the thinning's alone; every other
    item's noise is its own label, whatever the list's order and batches.

    Args:
        held_out: the held-out scans; the bridge samples :func:`bridge_held_out` of them.
        specs: the new cortices ({id: spec}: :func:`shape_specs` and :func:`held_out_atrophy`,
            whose condition volumes follow the per-shape patterns).
        settings: config diffusion.bridge (``conditions``: the roles, ``sampling.max_held_out``).
        seed: the split's seed.
        image_pattern: a scan's model-ready image (paired with its samples for fidelity).
        patterns: the condition volumes' patterns by role.

    Returns:
        [{id, label, kind, real, noise, twin, <role>: path for each role}]: ``id`` the scan prefix
        or shape id, ``label`` the name of its sample (cond-<label>_T1w.nii.gz), ``kind``
        ``held_out`` or the shape's kind, ``real`` the scan's image ("" for a new cortex),
        ``noise`` the key of its sampling noise, ``twin`` its unthinned twin's label ("": none).
    """
    chosen = bridge_held_out(held_out, settings, seed)
    scans = {scan.prefix: scan for scan in chosen}
    items = [{"id": scan.prefix, "label": condition_label(scan), "kind": "held_out",
              "real": format_scan(image_pattern, scan), "twin": ""} for scan in chosen]
    items += [{"id": shape, "label": shape, "kind": spec["kind"], "real": "", "twin": twin_label(spec, scans)}
              for shape, spec in specs.items()]
    for item in items:
        item["noise"] = item["twin"] or item["label"]
        item.update({role: condition_path(item, role, patterns, scans) for role in settings["conditions"]})
    return items


def twin_pairs(conditions: Sequence[Mapping]) -> list[tuple[Mapping, Mapping]]:
    """(atrophied, unthinned twin) condition items of :func:`bridge_conditions`, in condition order."""
    by_label = {item["label"]: item for item in conditions}
    return [(item, by_label[item["twin"]]) for item in conditions if item["twin"]]


def cycle_items(conditions: Sequence[Mapping], settings: Mapping, seed: int) -> dict[str, Mapping]:
    """The bridge samples whose cortex is re-extracted: {label: condition item} of the kinds in
    ``settings["kinds"]`` (config evaluate.cycle_consistency), at most ``settings["max_items"]``
    of them (a subset drawn with ``seed``; None: all), in condition order."""
    kinds = set(settings["kinds"])
    items = [item for item in conditions if item["kind"] in kinds]
    return {item["label"]: item for item in seeded_subset(items, settings["max_items"], seed)}


def reference_kind(settings: Mapping, held_out_count: int) -> str:
    """config evaluate.reference with 'auto' resolved: 'held_out' once at least
    evaluate.reference_min_held_out subjects are held out (training subjects would let a copying
    generator score well), 'all' below that. ``settings``: config evaluate."""
    kind = settings["reference"]
    if kind == "auto":
        return "held_out" if held_out_count >= settings["reference_min_held_out"] else "all"
    return kind


def reference_scans(scans: Sequence[Scan], held_out: Sequence[Scan], settings: Mapping, seed: int) -> list[Scan]:
    """The real scans the synthetic sets are compared with: the held-out ones or all of them
    (config evaluate.reference, see :func:`reference_kind`), at most evaluate.max_reference_images
    (a subset drawn with ``seed``; None: all), in scan order. ``settings``: config evaluate."""
    chosen = held_out if reference_kind(settings, len(held_out)) == "held_out" else scans
    return seeded_subset(chosen, settings["max_reference_images"], seed)


def sample_names(model: str, suffix: str, count: int) -> list[str]:
    """results/samples/<model>/sample-0001_<suffix> ... sample-<count>_<suffix>."""
    return [f"results/samples/{model}/sample-{index:04d}_{suffix}" for index in range(1, count + 1)]
