# Diffusion generators: a shape-to-image Brownian bridge conditioned on the cortical SDFs,
# an unconditional 3D DDPM, and a DDPM over deformation fields that warps a template; what
# each one is, is its entry in cortexgen.diffusion.registry. Each trains in one job of rule
# train_generator ({model}) on the training subjects of config 'split' (several GPUs: torchrun,
# one process per GPU of its `gpu` resource), keeps resumable checkpoints in
# results/models/<model>/checkpoints (not a declared output, so a rerun does not delete
# them), and samples synthetic images onto the model grid.

DEFORM = DATASETS["deform"]
SAMPLES = "results/samples"


wildcard_constraints:
    model="|".join(GENERATORS),


rule deform_template:
    input:
        unpack(deform_template_inputs),
        template=config["preprocess"]["template"],
        mask=config["preprocess"]["template_brain_mask"],
    output:
        image=f"{DEFORM}/tpl-{SPACE}/tpl-{SPACE}_res-{RES}_desc-{DEFORM_TEMPLATE_DESC}_T1w.nii.gz",
        # BIDS asks for a sidecar saying what a res- label means, and whether a _T1w is skull-stripped.
        image_json=f"{DEFORM}/tpl-{SPACE}/tpl-{SPACE}_res-{RES}_desc-{DEFORM_TEMPLATE_DESC}_T1w.json",
    params:
        space=SPACE,
        shape=config["preprocess"]["shape"],
        percentiles=config["preprocess"]["normalize"]["percentiles"],
        template=config["diffusion"]["deform"]["template"],
        registration=config["diffusion"]["deform"]["registration"],
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


rule train_generator:
    input:
        unpack(subject_inputs(generator_inputs)),
    output:
        model="results/models/{model}/model.pt",
        log="results/models/{model}/train_log.tsv",
        png=report(
            "results/models/{model}/loss.png",
            caption="../report/loss.rst",
            category="4. Generators",
            labels={"model": "{model}", "figure": "loss"},
        ),
    params:
        subject_files=subject_params(generator_inputs),
        settings=generator_settings,
        device=config["diffusion"]["device"],
        cuda=config["diffusion"]["cuda"],
        sdf_clip_mm=config["surfaces"]["sdf_clip_mm"],
        checkpoints="results/models/{model}/checkpoints",
    log:
        "logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    threads: job_resource("train_{model}", "threads")
    resources:
        mem_mb=retry_mem_mb("train_{model}"),
        runtime=job_resource("train_{model}", "runtime"),
        gpu=job_resource("train_{model}", "gpu", 0),
    conda:
        "../envs/cortexgen.yaml"
    script:
        "../workflow_scripts/train_generator.py"


BRIDGE_CONDITIONS = bridge_conditions()


# Sampling: one rule per generator (sample_bridge, sample_ddpm, ...), all from this definition.
# Not one rule over {model}: a rule's outputs cannot depend on a wildcard's value, and each
# generator writes its own files (the bridge one image per condition, the others sampling.n
# images, a field generator a field beside each).
for model in GENERATORS:

    rule:
        name:
            f"sample_{model}"
        input:
            unpack(sample_inputs(model)),
            model=str(rules.train_generator.output.model).format(model=model),
        output:
            **sample_outputs(model),
        params:
            model=model,
            settings=config["diffusion"][model],
            device=config["diffusion"]["device"],
            cuda=config["diffusion"]["cuda"],
            **sample_params(model),
        log:
            f"logs/sample/{model}.log",
        benchmark:
            f"results/benchmarks/sample/{model}.tsv"
        threads: rule_resources(f"sample_{model}")["threads"]
        resources:
            mem_mb=retry_mem_mb(f"sample_{model}"),
            runtime=rule_resources(f"sample_{model}")["runtime"],
            gpu=rule_resources(f"sample_{model}").get("gpu", 0),
        conda:
            "../envs/cortexgen.yaml"
        script:
            "../workflow_scripts/sample_generator.py"
