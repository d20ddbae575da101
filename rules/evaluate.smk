# Evaluation: what the generators made, against real images and against the cortex that was
# asked for. Set metrics (MMD, FID, MS-SSIM) per generator and for the real set against itself,
# each sample's nearest training image (memorisation) beside each held-out real image's,
# paired fidelity of the bridge (a conditional generator) on held-out subjects, and cortical
# cycle consistency: the surface stage re-run on its samples and compared with the surfaces that conditioned them,
# and on each held-out subject's real image (what a perfect generator would score: the surface
# stage on a ~2 mm image does not find its own 1 mm surfaces exactly). Atrophy as an experiment:
# each atrophied cortex's sample against its unthinned twin's, drawn with the same noise.

EVALUATION = "results/evaluation"
CYCLE_ITEMS = cycle_items()
ATROPHY_PAIRS = atrophy_pairs()


wildcard_constraints:
    label="|".join(CYCLE_ITEMS) or "no-cycle",
    source="|".join([*CONDITIONAL_GENERATORS, "real"]),


rule cycle_consistency:
    input:
        unpack(subject_inputs(cycle_subject_files, cycle_scans)),
        unpack(cycle_other_files),
        template_white=rules.surface_template.output.white,
        template_pial=rules.surface_template.output.pial,
        template_cortex=rules.surface_template.output.cortex,
        template_label=rules.surface_template.output.label,
        template_mask=rules.surface_template.output.mask,
        grid=config["preprocess"]["template"],
    output:
        table=f"{EVALUATION}/cycle/{{source}}/cond-{{label}}_cycle.tsv",
    params:
        subject_files=subject_params(cycle_subject_files),
        hemis=HEMIS,
        segment=config["surfaces"]["segment"],
        warp=config["surfaces"]["warp"],
        fit=config["surfaces"]["fit"],
        max_thickness_mm=config["surfaces"]["max_thickness_mm"],
        repair=config["surfaces"]["repair_self_intersections"],
        mask=config["evaluate"]["cycle_consistency"]["mask"],
    log:
        "logs/cycle_consistency/{source}/{label}.log",
    benchmark:
        "results/benchmarks/cycle_consistency/{source}/{label}.tsv"
    threads: rule_resources("cycle_consistency")["threads"]
    resources:
        mem_mb=rule_resources("cycle_consistency")["mem_mb"],
        runtime=rule_resources("cycle_consistency")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/cycle_consistency.py"


rule evaluate:
    input:
        unpack(subject_inputs(evaluation_subject_files)),
        unpack(evaluation_inputs),
    output:
        tsv=report(
            f"{EVALUATION}/metrics.tsv",
            caption="../report/metrics.rst",
            category="5. Evaluation",
            labels={"figure": "metrics table"},
        ),
        json=f"{EVALUATION}/metrics.json",
        memorisation=report(
            f"{EVALUATION}/memorisation.tsv",
            caption="../report/memorisation.rst",
            category="5. Evaluation",
            labels={"figure": "memorisation: nearest training image"},
        ),
        metrics_png=report(
            f"{EVALUATION}/figures/metrics.png",
            caption="../report/metrics_figure.rst",
            category="5. Evaluation",
            labels={"figure": "metrics with 95% CIs"},
        ),
        training_png=report(
            f"{EVALUATION}/figures/training.png",
            caption="../report/training.rst",
            category="4. Generators",
            labels={"figure": "training loss"},
        ),
        **{
            f"gallery_{model}": report(
                f"{EVALUATION}/figures/gallery-{model}.png",
                caption="../report/gallery.rst",
                category="4. Generators",
                labels={"figure": f"gallery: {model}"},
            )
            for model in GENERATORS
        },
    params:
        subject_files=subject_params(evaluation_subject_files),
        generators=GENERATORS,
        reference=reference_kind(),
        memorisation=config["evaluate"]["memorisation"],
        metrics=config["evaluate"]["metrics"],
        medicalnet=config["evaluate"]["medicalnet"],
        gallery=config["evaluate"]["gallery"],
        device=config["diffusion"]["device"],
        logs="logs",
    log:
        "logs/evaluate/evaluate.log",
    benchmark:
        "results/benchmarks/evaluate/evaluate.tsv"
    threads: rule_resources("evaluate")["threads"]
    resources:
        mem_mb=rule_resources("evaluate")["mem_mb"],
        runtime=rule_resources("evaluate")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule atrophy_effect:
    input:
        unpack(subject_inputs(atrophy_subject_files, atrophy_subject_scans)),
        unpack(atrophy_other_files),
        cortex=rules.surface_template.output.cortex,
    output:
        tsv=report(
            f"{EVALUATION}/atrophy.tsv",
            caption="../report/atrophy.rst",
            category="5. Evaluation",
            labels={"figure": "atrophy: twin differences"},
        ),
        png=report(
            f"{EVALUATION}/figures/atrophy.png",
            caption="../report/atrophy_figure.rst",
            category="5. Evaluation",
            labels={"figure": "atrophy: a twin pair"},
        ),
    params:
        subject_files=subject_params(atrophy_subject_files),
        hemis=HEMIS,
        pairs=ATROPHY_PAIRS,
    log:
        "logs/atrophy_effect/atrophy.log",
    benchmark:
        "results/benchmarks/atrophy_effect/atrophy.tsv"
    threads: rule_resources("atrophy_effect")["threads"]
    resources:
        mem_mb=rule_resources("atrophy_effect")["mem_mb"],
        runtime=rule_resources("atrophy_effect")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/atrophy_effect.py"
