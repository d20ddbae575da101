# Statistical shape model of the cortex (PCA per hemisphere over the training subjects'
# midthickness vertices and thickness), its quality, and new cortices drawn from it
# (samples, interpolations between subjects, simulated atrophy and the mean shape, its
# unthinned twin) as surfaces and SDFs; the same atrophies applied to held-out subjects' own
# cortices, whose unthinned twins are the subjects' own surfaces and SDFs.

SSM = "results/shape_model/hemi-{hemi}"
SHAPE = "results/shapes/{shape}/{shape}"
THINNED = "results/shapes/{thinned}/{thinned}"


SHAPE_SPECS = shape_specs()
HELD_OUT_ATROPHY = held_out_atrophy()


wildcard_constraints:
    hemi="L|R",
    shape="|".join(SHAPE_SPECS) or "no-shapes",
    thinned="|".join(HELD_OUT_ATROPHY) or "no-thinned",


rule fit_shape_model:
    input:
        unpack(subject_inputs(shape_model_files)),
    output:
        model=f"{SSM}_ssm.npz",
    params:
        subject_files=subject_params(shape_model_files),
        subjects=[scan.prefix for scan in TRAIN_SCANS],
        settings=config["shape_model"],
    log:
        "logs/fit_shape_model/hemi-{hemi}.log",
    benchmark:
        "results/benchmarks/fit_shape_model/hemi-{hemi}.tsv"
    threads: rule_resources("fit_shape_model")["threads"]
    resources:
        mem_mb=rule_resources("fit_shape_model")["mem_mb"],
        runtime=rule_resources("fit_shape_model")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/fit_shape_model.py"


rule shape_model_quality:
    input:
        unpack(subject_inputs(shape_model_files)),
        model=rules.fit_shape_model.output.model,
    output:
        json=f"{SSM}_quality.json",
        png=report(
            f"{SSM}_quality.png",
            caption="../report/shape_model_quality.rst",
            category="3. Shape model",
            labels={"hemisphere": "{hemi}", "figure": "quality"},
        ),
        modes=report(
            f"{SSM}_modes.png",
            caption="../report/shape_model_modes.rst",
            category="3. Shape model",
            labels={"hemisphere": "{hemi}", "figure": "modes"},
        ),
    params:
        subject_files=subject_params(shape_model_files),
        settings=config["shape_model"],
    log:
        "logs/shape_model_quality/hemi-{hemi}.log",
    benchmark:
        "results/benchmarks/shape_model_quality/hemi-{hemi}.tsv"
    threads: rule_resources("shape_model_quality")["threads"]
    resources:
        mem_mb=rule_resources("shape_model_quality")["mem_mb"],
        runtime=rule_resources("shape_model_quality")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/shape_model_quality.py"


rule make_shape:
    input:
        unpack(subject_inputs(interpolation_endpoints, interpolation_scans)),
        models=expand(rules.fit_shape_model.output.model, hemi=HEMIS),
        template=config["preprocess"]["template"],
    output:
        white=expand(f"{SHAPE}_hemi-{{hemi}}_white.surf.gii", hemi=HEMIS, allow_missing=True),
        pial=expand(f"{SHAPE}_hemi-{{hemi}}_pial.surf.gii", hemi=HEMIS, allow_missing=True),
        midthickness=expand(f"{SHAPE}_hemi-{{hemi}}_midthickness.surf.gii", hemi=HEMIS, allow_missing=True),
        thickness=expand(f"{SHAPE}_hemi-{{hemi}}_thickness.shape.gii", hemi=HEMIS, allow_missing=True),
        # Named as the subjects' (rules/surfaces.smk says why _sdf).
        pial_sdf=f"{SHAPE}_space-{SPACE}_res-{RES}_desc-pial_sdf.nii.gz",
        white_sdf=f"{SHAPE}_space-{SPACE}_res-{RES}_desc-white_sdf.nii.gz",
        ribbon=f"{SHAPE}_space-{SPACE}_res-{RES}_desc-ribbon_mask.nii.gz",
        qc=f"{SHAPE}_qc.tsv",
    params:
        subject_files=subject_params(interpolation_endpoints),
        hemis=HEMIS,
        spec=lambda wildcards: SHAPE_SPECS[wildcards.shape],
        grid_shape=config["preprocess"]["shape"],
        clip_mm=config["surfaces"]["sdf_clip_mm"],
        repair=config["surfaces"]["repair_self_intersections"],
        fit=config["surfaces"]["fit"],
    log:
        "logs/make_shape/{shape}.log",
    benchmark:
        "results/benchmarks/make_shape/{shape}.tsv"
    threads: rule_resources("make_shape")["threads"]
    resources:
        mem_mb=rule_resources("make_shape")["mem_mb"],
        runtime=rule_resources("make_shape")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/make_shape.py"


rule thin_held_out:
    input:
        unpack(subject_inputs(thinned_files, thinned_scans)),
        cortex=rules.surface_template.output.cortex,
    output:
        white=expand(f"{THINNED}_hemi-{{hemi}}_white.surf.gii", hemi=HEMIS, allow_missing=True),
        pial=expand(f"{THINNED}_hemi-{{hemi}}_pial.surf.gii", hemi=HEMIS, allow_missing=True),
        midthickness=expand(f"{THINNED}_hemi-{{hemi}}_midthickness.surf.gii", hemi=HEMIS, allow_missing=True),
        thickness=expand(f"{THINNED}_hemi-{{hemi}}_thickness.shape.gii", hemi=HEMIS, allow_missing=True),
        pial_sdf=f"{THINNED}_space-{SPACE}_res-{RES}_desc-pial_sdf.nii.gz",
        white_sdf=f"{THINNED}_space-{SPACE}_res-{RES}_desc-white_sdf.nii.gz",
        ribbon=f"{THINNED}_space-{SPACE}_res-{RES}_desc-ribbon_mask.nii.gz",
    params:
        subject_files=subject_params(thinned_files),
        hemis=HEMIS,
        atrophy=lambda wildcards: HELD_OUT_ATROPHY[wildcards.thinned],
        clip_mm=config["surfaces"]["sdf_clip_mm"],
    log:
        "logs/thin_held_out/{thinned}.log",
    benchmark:
        "results/benchmarks/thin_held_out/{thinned}.tsv"
    threads: rule_resources("thin_held_out")["threads"]
    resources:
        mem_mb=rule_resources("thin_held_out")["mem_mb"],
        runtime=rule_resources("thin_held_out")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/thin_held_out.py"


# The thickness figure shows the left hemisphere of a few shapes, atrophies first.
FIGURE_SHAPES = planning.figure_shapes(SHAPE_SPECS)


rule qc_shapes:
    input:
        qc=expand(rules.make_shape.output.qc, shape=list(SHAPE_SPECS)),
        left_midthickness=expand(rules.make_shape.output.midthickness[HEMIS.index("L")], shape=FIGURE_SHAPES),
        left_thickness=expand(rules.make_shape.output.thickness[HEMIS.index("L")], shape=FIGURE_SHAPES),
    output:
        png=report(
            "results/qc/shapes_thickness.png",
            caption="../report/shapes.rst",
            category="3. Shape model",
            labels={"hemisphere": "L", "figure": "new cortices"},
        ),
        tsv="results/shape_model/shapes_qc.tsv",
    params:
        shapes=FIGURE_SHAPES,
    log:
        "logs/qc_shapes/shapes.log",
    benchmark:
        "results/benchmarks/qc_shapes/shapes.tsv"
    threads: rule_resources("qc_shapes")["threads"]
    resources:
        mem_mb=rule_resources("qc_shapes")["mem_mb"],
        runtime=rule_resources("qc_shapes")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/qc_shapes.py"
