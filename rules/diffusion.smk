# Diffusion generators: a shape-to-image Brownian bridge conditioned on the cortical SDFs,
# an unconditional 3D DDPM, and a DDPM over deformation fields that warps a template.
# Each trains in one job on the training subjects of config 'split' (several GPUs: torchrun,
# one process per GPU of the rule's `gpu` resource), keeps resumable checkpoints in
# results/models/<model>/checkpoints (not a declared output, so a rerun does not delete
# them), and samples synthetic images onto the model grid.

DEFORM = DATASETS["deform"]
SAMPLES = "results/samples"


rule deform_template:
    input:
        template=config["preprocess"]["template"],
        mask=config["preprocess"]["template_brain_mask"],
    output:
        image=f"{DEFORM}/tpl-{SPACE}/tpl-{SPACE}_res-{RES}_desc-brain_T1w.nii.gz",
        # BIDS asks for a sidecar saying what a res- label means, and whether a _T1w is skull-stripped.
        image_json=f"{DEFORM}/tpl-{SPACE}/tpl-{SPACE}_res-{RES}_desc-brain_T1w.json",
    params:
        space=SPACE,
        shape=config["preprocess"]["shape"],
        percentiles=config["preprocess"]["normalize"]["percentiles"],
    log:
        "logs/deform_template/template.log",
    benchmark:
        "results/benchmarks/deform_template/template.tsv"
    threads: rule_resources("deform_template")["threads"]
    resources:
        mem_mb=rule_resources("deform_template")["mem_mb"],
        runtime=rule_resources("deform_template")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/deform_template.py"


rule deformation_field:
    input:
        image=rules.preprocess.output.image,
        template=rules.deform_template.output.image,
    output:
        field=f"{DEFORM}/{{subdir}}/anat/{{scan}}_from-{SPACE}_to-T1w_res-{RES}_desc-displacement_xfm.nii.gz",
    params:
        settings=config["diffusion"]["deform"]["registration"],
    log:
        "logs/deformation_field/{subdir}/{scan}.log",
    benchmark:
        "results/benchmarks/deformation_field/{subdir}/{scan}.tsv"
    threads: rule_resources("deformation_field")["threads"]
    resources:
        mem_mb=rule_resources("deformation_field")["mem_mb"],
        runtime=rule_resources("deformation_field")["runtime"],
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/deformation_field.py"


rule train_bridge:
    input:
        unpack(subject_inputs(generator_inputs("bridge"))),
    output:
        model="results/models/bridge/model.pt",
        log="results/models/bridge/train_log.tsv",
        png=report(
            "results/models/bridge/loss.png",
            caption="../report/loss.rst",
            category="4. Generators",
            labels={"model": "bridge", "figure": "loss"},
        ),
    params:
        subject_files=subject_params(generator_inputs("bridge")),
        model="bridge",
        settings=config["diffusion"]["bridge"],
        device=config["diffusion"]["device"],
        cuda=config["diffusion"]["cuda"],
        sdf_clip_mm=config["surfaces"]["sdf_clip_mm"],
        checkpoints="results/models/bridge/checkpoints",
    log:
        "logs/train/bridge.log",
    benchmark:
        "results/benchmarks/train/bridge.tsv"
    threads: rule_resources("train_bridge")["threads"]
    resources:
        mem_mb=retry_mem_mb("train_bridge"),
        runtime=rule_resources("train_bridge")["runtime"],
        gpu=rule_resources("train_bridge").get("gpu", 0),
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/train_generator.py"


use rule train_bridge as train_ddpm with:
    input:
        unpack(subject_inputs(generator_inputs("ddpm"))),
    output:
        model="results/models/ddpm/model.pt",
        log="results/models/ddpm/train_log.tsv",
        png=report(
            "results/models/ddpm/loss.png",
            caption="../report/loss.rst",
            category="4. Generators",
            labels={"model": "ddpm", "figure": "loss"},
        ),
    params:
        subject_files=subject_params(generator_inputs("ddpm")),
        model="ddpm",
        settings=config["diffusion"]["ddpm"],
        device=config["diffusion"]["device"],
        cuda=config["diffusion"]["cuda"],
        sdf_clip_mm=config["surfaces"]["sdf_clip_mm"],
        checkpoints="results/models/ddpm/checkpoints",
    log:
        "logs/train/ddpm.log",
    benchmark:
        "results/benchmarks/train/ddpm.tsv"
    threads: rule_resources("train_ddpm")["threads"]
    resources:
        mem_mb=retry_mem_mb("train_ddpm"),
        runtime=rule_resources("train_ddpm")["runtime"],
        gpu=rule_resources("train_ddpm").get("gpu", 0),


use rule train_bridge as train_deform with:
    input:
        unpack(subject_inputs(generator_inputs("deform"))),
    output:
        model="results/models/deform/model.pt",
        log="results/models/deform/train_log.tsv",
        png=report(
            "results/models/deform/loss.png",
            caption="../report/loss.rst",
            category="4. Generators",
            labels={"model": "deform", "figure": "loss"},
        ),
    params:
        subject_files=subject_params(generator_inputs("deform")),
        model="deform",
        settings=config["diffusion"]["deform"],
        device=config["diffusion"]["device"],
        cuda=config["diffusion"]["cuda"],
        sdf_clip_mm=config["surfaces"]["sdf_clip_mm"],
        checkpoints="results/models/deform/checkpoints",
    log:
        "logs/train/deform.log",
    benchmark:
        "results/benchmarks/train/deform.tsv"
    threads: rule_resources("train_deform")["threads"]
    resources:
        mem_mb=retry_mem_mb("train_deform"),
        runtime=rule_resources("train_deform")["runtime"],
        gpu=rule_resources("train_deform").get("gpu", 0),


BRIDGE_CONDITIONS = bridge_conditions()


rule sample_bridge:
    input:
        unpack(subject_inputs(bridge_condition_files)),
        model=rules.train_bridge.output.model,
    output:
        images=[f"{SAMPLES}/bridge/cond-{item['label']}_T1w.nii.gz" for item in BRIDGE_CONDITIONS],
        table=f"{SAMPLES}/bridge/samples.tsv",
    params:
        model="bridge",
        settings=config["diffusion"]["bridge"],
        device=config["diffusion"]["device"],
        cuda=config["diffusion"]["cuda"],
        sdf_clip_mm=config["surfaces"]["sdf_clip_mm"],
        conditions=BRIDGE_CONDITIONS,
    log:
        "logs/sample/bridge.log",
    benchmark:
        "results/benchmarks/sample/bridge.tsv"
    threads: rule_resources("sample_bridge")["threads"]
    resources:
        mem_mb=retry_mem_mb("sample_bridge"),
        runtime=rule_resources("sample_bridge")["runtime"],
        gpu=rule_resources("sample_bridge").get("gpu", 0),
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/sample_generator.py"


rule sample_ddpm:
    input:
        model=rules.train_ddpm.output.model,
        grid=rules.deform_template.output.image,
    output:
        images=sample_names("ddpm", "T1w.nii.gz"),
        table=f"{SAMPLES}/ddpm/samples.tsv",
    params:
        model="ddpm",
        settings=config["diffusion"]["ddpm"],
        device=config["diffusion"]["device"],
        cuda=config["diffusion"]["cuda"],
    log:
        "logs/sample/ddpm.log",
    benchmark:
        "results/benchmarks/sample/ddpm.tsv"
    threads: rule_resources("sample_ddpm")["threads"]
    resources:
        mem_mb=retry_mem_mb("sample_ddpm"),
        runtime=rule_resources("sample_ddpm")["runtime"],
        gpu=rule_resources("sample_ddpm").get("gpu", 0),
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/sample_generator.py"


rule sample_deform:
    input:
        model=rules.train_deform.output.model,
        grid=rules.deform_template.output.image,
    output:
        images=sample_names("deform", "T1w.nii.gz"),
        fields=sample_names("deform", f"from-{SPACE}_desc-displacement_xfm.nii.gz"),
        table=f"{SAMPLES}/deform/samples.tsv",
    params:
        model="deform",
        settings=config["diffusion"]["deform"],
        device=config["diffusion"]["device"],
        cuda=config["diffusion"]["cuda"],
    log:
        "logs/sample/deform.log",
    benchmark:
        "results/benchmarks/sample/deform.tsv"
    threads: rule_resources("sample_deform")["threads"]
    resources:
        mem_mb=retry_mem_mb("sample_deform"),
        runtime=rule_resources("sample_deform")["runtime"],
        gpu=rule_resources("sample_deform").get("gpu", 0),
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/sample_generator.py"
