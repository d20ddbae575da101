# Preprocessing, one job per head (cortexgen/preprocess/chain.py), every intermediate written:
# raw T1w -> denoise, N4 -> affine to MNI -> skull strip -> normalize (+ qc_preproc).

# Derivatives: results/<stage>/<sub>/[<ses>/]anat/<prefix>_<entities>_<suffix>
PREPROC = f"{DATASETS['preproc']}/{{subdir}}/anat/{{scan}}"


rule preprocess:
    input:
        raw=raw_t1w_input,
        template=config["preprocess"]["template"],
        template_brain_mask=config["preprocess"]["template_brain_mask"],
    output:
        denoised=f"{PREPROC}_desc-denoised_T1w.nii.gz",
        corrected=f"{PREPROC}_desc-n4_T1w.nii.gz",
        head_mask=f"{PREPROC}_desc-head_mask.nii.gz",
        head=f"{PREPROC}_space-{SPACE}_desc-head_T1w.nii.gz",
        xfm=f"{PREPROC}_from-T1w_to-{SPACE}_mode-image_xfm.mat",
        brain=f"{PREPROC}_space-{SPACE}_desc-brain_T1w.nii.gz",
        brain_mask=f"{PREPROC}_space-{SPACE}_desc-brain_mask.nii.gz",
        image=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-preproc_T1w.nii.gz",
        image_mask=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-brain_mask.nii.gz",
        # BIDS asks for a sidecar saying what a res- label means, and whether a _T1w image is
        # skull-stripped (SkullStripped).
        image_json=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-preproc_T1w.json",
        image_mask_json=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-brain_mask.json",
        denoised_json=f"{PREPROC}_desc-denoised_T1w.json",
        corrected_json=f"{PREPROC}_desc-n4_T1w.json",
        head_json=f"{PREPROC}_space-{SPACE}_desc-head_T1w.json",
        brain_json=f"{PREPROC}_space-{SPACE}_desc-brain_T1w.json",
    params:
        raw=raw_t1w_path,
        bids_dir=config["bids_dir"],
        space=SPACE,
        preprocess=config["preprocess"],
    log:
        "logs/preprocess/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/preprocess/{subdir}/{scan}.tsv"
    threads: rule_resources("preprocess")["threads"]
    resources:
        mem_mb=rule_resources("preprocess")["mem_mb"],
        runtime=rule_resources("preprocess")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/preprocess.py"


rule qc_preproc:
    input:
        raw=raw_t1w_input,
        denoised=scan_file(rules.preprocess.output.denoised),
        corrected=scan_file(rules.preprocess.output.corrected),
        head_mask=scan_file(rules.preprocess.output.head_mask),
        head=scan_file(rules.preprocess.output.head),
        brain=scan_file(rules.preprocess.output.brain),
        brain_mask=scan_file(rules.preprocess.output.brain_mask),
        image=scan_file(rules.preprocess.output.image),
        image_mask=scan_file(rules.preprocess.output.image_mask),
    output:
        png=report(
            "results/qc/{scan}_preproc.png",
            caption="../report/qc_preproc.rst",
            category="1. Preprocessing",
            labels={"subject": "{scan}", "figure": "preprocessing QC"},
        ),
    params:
        raw=raw_t1w_path,
        max_voxel_size_mm=config["preprocess"]["max_voxel_size_mm"],
    log:
        "logs/qc_preproc/{scan}.log",
    benchmark:
        "results/benchmarks/qc_preproc/{scan}.tsv"
    threads: rule_resources("qc_preproc")["threads"]
    resources:
        mem_mb=rule_resources("qc_preproc")["mem_mb"],
        runtime=rule_resources("qc_preproc")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/qc_preproc.py"


rule dataset_description:
    output:
        # One BIDS-derivative dataset per stage that holds subjects (DATASETS, rules/common.smk).
        json=expand("{root}/dataset_description.json", root=DATASETS.values()),
        # What the BIDS validator skips: file types BIDS lacks.
        bidsignore=expand("{root}/.bidsignore", root=DATASETS.values()),
    params:
        datasets=DATASETS,
        sources=DATASET_SOURCES,
        bids_dir=config["bids_dir"],
        # CodeURL: the origin remote of the checkout the workflow runs from, if it is one.
        workflow_dir=workflow.basedir,
    log:
        "logs/dataset_description.log",
    benchmark:
        "results/benchmarks/dataset_description.tsv"
    localrule: True
    threads: rule_resources("dataset_description")["threads"]
    resources:
        mem_mb=rule_resources("dataset_description")["mem_mb"],
        runtime=rule_resources("dataset_description")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/dataset_description.py"
