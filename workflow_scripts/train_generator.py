"""Rule train_generator: one generator ({model}), resuming from its checkpoints (a network), or fitted.

With a ``gpu`` resource above 1 a network's training runs under torchrun, one process per GPU
(DDP); the job description goes to it as a JSON file, never as shell text.
"""

from cortexgen.runtime import job_inputs, job_log, limit_threads

limit_threads(snakemake.threads)

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from cortexgen.diffusion.registry import generator  # noqa: E402
from cortexgen.diffusion.run import train_job  # noqa: E402
from cortexgen.shards import complete_indices, select  # noqa: E402

with job_log(snakemake.log[0]) as log:
    inputs = {key: [value] if isinstance(value, str) else list(value) for key, value in job_inputs(snakemake).items()}
    # Sharded runs: training (and validation) subjects their shard did not make are left out,
    # from all of a subject's volumes at once (images and conditions are parallel lists).
    for prefix in ("", "val_"):
        group = {key: paths for key, paths in inputs.items() if key.startswith("val_") == (prefix == "val_")}
        keep = complete_indices(group, log)
        inputs.update({key: select(paths, keep) for key, paths in group.items()})
    spec = {
        "model": snakemake.wildcards.model,
        "settings": snakemake.params.settings,
        "device": snakemake.params.device,
        "cuda": snakemake.params.cuda,
        "sdf_clip_mm": snakemake.params.sdf_clip_mm,
        "checkpoints": snakemake.params.checkpoints,
        "inputs": inputs,
        "outputs": {key: str(value) for key, value in snakemake.output.items()},
    }
    gpus = int(snakemake.resources.get("gpu", 0) or 0)
    if gpus > 1 and generator(spec["model"]).network:
        Path(spec["checkpoints"]).mkdir(parents=True, exist_ok=True)
        spec_path = Path(spec["checkpoints"]) / "job.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                   "-m", "cortexgen.diffusion.run", str(spec_path)]
        log.info("launching %d processes: %s", gpus, " ".join(command))
        # workflow_scripts/cortexgen links to the library, so the script folder makes it importable.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [snakemake.scriptdir, os.environ.get("PYTHONPATH")])))
        subprocess.run(command, check=True, env=env)
    else:
        train_job(spec)
