# Cortical surfaces: tissue segmentation, the fsaverage template carried onto each subject
# and fitted to its tissue, signed distance volumes of the surfaces on the model grid, QC.

SURF = f"{DATASETS['surfaces']}/{{subdir}}/anat/{{scan}}"
# A template's files live in a tpl-<label>/ folder of their own (BIDS, as TemplateFlow).
TEMPLATE = f"{DATASETS['surfaces']}/tpl-fsaverage/tpl-fsaverage"
HEMIS = ["L", "R"]


rule surface_template:
    output:
        white=expand(f"{TEMPLATE}_hemi-{{hemi}}_white.surf.gii", hemi=HEMIS),
        pial=expand(f"{TEMPLATE}_hemi-{{hemi}}_pial.surf.gii", hemi=HEMIS),
        cortex=expand(f"{TEMPLATE}_hemi-{{hemi}}_desc-cortex_mask.shape.gii", hemi=HEMIS),
        label=f"{TEMPLATE}_desc-tissue_dseg.nii.gz",
        mask=f"{TEMPLATE}_desc-tissue_mask.nii.gz",
    params:
        hemis=HEMIS,
        subdivisions=config["surfaces"]["template_subdivisions"],
        resolution_mm=config["surfaces"]["template_resolution_mm"],
    log:
        "logs/surface_template/template.log",
    benchmark:
        "results/benchmarks/surface_template/template.tsv"
    threads: rule_resources("surface_template")["threads"]
    resources:
        mem_mb=rule_resources("surface_template")["mem_mb"],
        runtime=rule_resources("surface_template")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/surface_template.py"


rule segment:
    input:
        brain=rules.preprocess.output.brain,
        mask=rules.preprocess.output.brain_mask,
    output:
        csf=f"{SURF}_space-{SPACE}_label-CSF_probseg.nii.gz",
        gm=f"{SURF}_space-{SPACE}_label-GM_probseg.nii.gz",
        wm=f"{SURF}_space-{SPACE}_label-WM_probseg.nii.gz",
        partition=f"{SURF}_space-{SPACE}_desc-cortex_dseg.nii.gz",
    params:
        settings=config["surfaces"]["segment"],
        partition=config["surfaces"]["partition"],
    log:
        "logs/segment/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/segment/{subdir}/{scan}.tsv"
    threads: rule_resources("segment")["threads"]
    resources:
        mem_mb=rule_resources("segment")["mem_mb"],
        runtime=rule_resources("segment")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/segment.py"


rule surfaces:
    input:
        csf=rules.segment.output.csf,
        gm=rules.segment.output.gm,
        wm=rules.segment.output.wm,
        partition=rules.segment.output.partition,
        xfm=rules.preprocess.output.xfm,
        template_white=rules.surface_template.output.white,
        template_pial=rules.surface_template.output.pial,
        template_cortex=rules.surface_template.output.cortex,
        template_label=rules.surface_template.output.label,
        template_mask=rules.surface_template.output.mask,
    output:
        white=expand(f"{SURF}_hemi-{{hemi}}_white.surf.gii", hemi=HEMIS, allow_missing=True),
        pial=expand(f"{SURF}_hemi-{{hemi}}_pial.surf.gii", hemi=HEMIS, allow_missing=True),
        midthickness=expand(f"{SURF}_hemi-{{hemi}}_midthickness.surf.gii", hemi=HEMIS, allow_missing=True),
        thickness=expand(f"{SURF}_hemi-{{hemi}}_thickness.shape.gii", hemi=HEMIS, allow_missing=True),
        native_thickness=expand(f"{SURF}_hemi-{{hemi}}_desc-native_thickness.shape.gii", hemi=HEMIS,
                                allow_missing=True),
    params:
        hemis=HEMIS,
        warp=config["surfaces"]["warp"],
        fit=config["surfaces"]["fit"],
        max_thickness_mm=config["surfaces"]["max_thickness_mm"],
        repair=config["surfaces"]["repair_self_intersections"],
    log:
        "logs/surfaces/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/surfaces/{subdir}/{scan}.tsv"
    threads: rule_resources("surfaces")["threads"]
    resources:
        mem_mb=rule_resources("surfaces")["mem_mb"],
        runtime=rule_resources("surfaces")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/surfaces.py"


rule surface_sdf:
    input:
        white=rules.surfaces.output.white,
        pial=rules.surfaces.output.pial,
        grid=rules.preprocess.output.image,
    # Signed distance maps end in _sdf, a suffix BIDS (1.10) does not define: its anatomical
    # derivatives are MR contrasts (_T1w...), quantitative MR maps (_T1map...), _mask, _dseg and
    # _probseg, and a distance in mm is none of these. A name the validator accepts (e.g.
    # desc-pial_T1w or desc-pial_mask) would tell BIDS tools that query by suffix it is an image
    # or a binary mask. So: BIDS entities and grammar, a suffix of their own, listed in
    # results/surfaces/.bidsignore (cortexgen.derivatives.BIDS_IGNORE), and a sidecar saying what the values are.
    output:
        pial_sdf=f"{SURF}_space-{SPACE}_res-{RES}_desc-pial_sdf.nii.gz",
        white_sdf=f"{SURF}_space-{SPACE}_res-{RES}_desc-white_sdf.nii.gz",
        ribbon=f"{SURF}_space-{SPACE}_res-{RES}_desc-ribbon_mask.nii.gz",
        # BIDS asks for a sidecar saying what a res- label means.
        pial_sdf_json=f"{SURF}_space-{SPACE}_res-{RES}_desc-pial_sdf.json",
        white_sdf_json=f"{SURF}_space-{SPACE}_res-{RES}_desc-white_sdf.json",
        ribbon_json=f"{SURF}_space-{SPACE}_res-{RES}_desc-ribbon_mask.json",
    params:
        clip_mm=config["surfaces"]["sdf_clip_mm"],
        space=SPACE,
    log:
        "logs/surface_sdf/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/surface_sdf/{subdir}/{scan}.tsv"
    threads: rule_resources("surface_sdf")["threads"]
    resources:
        mem_mb=rule_resources("surface_sdf")["mem_mb"],
        runtime=rule_resources("surface_sdf")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/surface_sdf.py"


rule qc_surfaces:
    input:
        brain=scan_file(rules.preprocess.output.brain),
        csf=scan_file(rules.segment.output.csf),
        gm=scan_file(rules.segment.output.gm),
        wm=scan_file(rules.segment.output.wm),
        partition=scan_file(rules.segment.output.partition),
        white=scan_file(rules.surfaces.output.white),
        pial=scan_file(rules.surfaces.output.pial),
        midthickness=scan_file(rules.surfaces.output.midthickness),
        thickness=scan_file(rules.surfaces.output.thickness),
        template_cortex=rules.surface_template.output.cortex,
    output:
        png=report(
            "results/qc/{scan}_surfaces.png",
            caption="../report/qc_surfaces.rst",
            category="2. Surfaces",
            labels={"subject": "{scan}", "figure": "surface QC"},
        ),
        tsv="results/qc/{scan}_surfaces.tsv",
    params:
        hemis=HEMIS,
        qc=config["surfaces"]["qc"],
    log:
        "logs/qc_surfaces/{scan}.log",
    benchmark:
        "results/benchmarks/qc_surfaces/{scan}.tsv"
    threads: rule_resources("qc_surfaces")["threads"]
    resources:
        mem_mb=rule_resources("qc_surfaces")["mem_mb"],
        runtime=rule_resources("qc_surfaces")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/qc_surfaces.py"
