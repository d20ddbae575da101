# Preprocessing, one rule per step:
# raw T1w -> denoise -> n4 -> mni_affine -> skullstrip -> normalize (+ qc_preproc).

# Derivatives: results/<stage>/<sub>/[<ses>/]anat/<prefix>_<entities>_<suffix>
PREPROC = "results/preproc/{subdir}/anat/{scan}"


rule denoise:
    input:
        raw=raw_t1w_input,
    output:
        denoised=f"{PREPROC}_desc-denoised_T1w.nii.gz",
    params:
        raw=raw_t1w_path,
        max_voxel_size_mm=config["preprocess"]["max_voxel_size_mm"],
        method=config["preprocess"]["denoise"]["method"],
        strength=config["preprocess"]["denoise"]["strength"],
        head_margin_voxels=config["preprocess"]["denoise"]["head_margin_voxels"],
    log:
        "logs/denoise/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/denoise/{subdir}/{scan}.tsv"
    threads: rule_resources("denoise")["threads"]
    resources:
        mem_mb=rule_resources("denoise")["mem_mb"],
        runtime=rule_resources("denoise")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/denoise.py"


rule n4:
    input:
        denoised=rules.denoise.output.denoised,
    output:
        corrected=f"{PREPROC}_desc-n4_T1w.nii.gz",
        head_mask=f"{PREPROC}_desc-head_mask.nii.gz",
    params:
        n4=config["preprocess"]["n4"],
    log:
        "logs/n4/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/n4/{subdir}/{scan}.tsv"
    threads: rule_resources("n4")["threads"]
    resources:
        mem_mb=rule_resources("n4")["mem_mb"],
        runtime=rule_resources("n4")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/n4.py"


rule mni_affine:
    input:
        corrected=rules.n4.output.corrected,
        template=config["preprocess"]["template"],
        template_brain_mask=config["preprocess"]["template_brain_mask"],
    output:
        head=f"{PREPROC}_space-{SPACE}_desc-head_T1w.nii.gz",
        xfm=f"{PREPROC}_from-T1w_to-{SPACE}_mode-image_xfm.mat",
    params:
        registration=config["preprocess"]["registration"],
        skullstripped_max_volume_ml=config["preprocess"]["skullstripped_max_volume_ml"],
    log:
        "logs/mni_affine/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/mni_affine/{subdir}/{scan}.tsv"
    threads: rule_resources("mni_affine")["threads"]
    resources:
        mem_mb=rule_resources("mni_affine")["mem_mb"],
        runtime=rule_resources("mni_affine")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/mni_affine.py"


rule skullstrip:
    input:
        head=rules.mni_affine.output.head,
        template_brain_mask=config["preprocess"]["template_brain_mask"],
    output:
        brain=f"{PREPROC}_space-{SPACE}_desc-brain_T1w.nii.gz",
        mask=f"{PREPROC}_space-{SPACE}_desc-brain_mask.nii.gz",
    params:
        skullstrip=config["preprocess"]["skullstrip"],
    log:
        "logs/skullstrip/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/skullstrip/{subdir}/{scan}.tsv"
    threads: rule_resources("skullstrip")["threads"]
    resources:
        mem_mb=rule_resources("skullstrip")["mem_mb"],
        runtime=rule_resources("skullstrip")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/skullstrip.py"


rule normalize:
    input:
        brain=rules.skullstrip.output.brain,
        mask=rules.skullstrip.output.mask,
    output:
        image=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-preproc_T1w.nii.gz",
        mask=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-brain_mask.nii.gz",
        # BIDS asks for a sidecar saying what a res- label means.
        image_json=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-preproc_T1w.json",
        mask_json=f"{PREPROC}_space-{SPACE}_res-{RES}_desc-brain_mask.json",
    params:
        raw=raw_t1w_path,
        bids_dir=config["bids_dir"],
        space=SPACE,
        shape=config["preprocess"]["shape"],
        percentiles=config["preprocess"]["normalize"]["percentiles"],
    log:
        "logs/normalize/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/normalize/{subdir}/{scan}.tsv"
    threads: rule_resources("normalize")["threads"]
    resources:
        mem_mb=rule_resources("normalize")["mem_mb"],
        runtime=rule_resources("normalize")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/normalize.py"


rule qc_preproc:
    input:
        raw=raw_t1w_input,
        denoised=scan_file(rules.denoise.output.denoised),
        corrected=scan_file(rules.n4.output.corrected),
        head_mask=scan_file(rules.n4.output.head_mask),
        head=scan_file(rules.mni_affine.output.head),
        brain=scan_file(rules.skullstrip.output.brain),
        brain_mask=scan_file(rules.skullstrip.output.mask),
        image=scan_file(rules.normalize.output.image),
        image_mask=scan_file(rules.normalize.output.mask),
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
        json="results/dataset_description.json",
    params:
        bids_dir=config["bids_dir"],
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
