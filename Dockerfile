# cortexgen: the whole workflow (library, Snakefile, rules, scripts, config, profiles, demo
# data and templates) with every dependency from PyPI.
#
#   docker build -t cortexgen/cortexgen:0.1.0 .                              # torch's CPU build
#   docker build --build-arg TORCH_VARIANT=cuda -t cortexgen/cortexgen:0.1.0-cuda .
#
# TORCH_VARIANT=cpu (default): torch from PyTorch's CPU wheel index (no CUDA libraries, ~1 GB
# smaller). cuda: torch from PyPI, whose Linux x86_64 wheels are CUDA builds carrying the CUDA
# runtime as nvidia-* wheels (the host needs only the driver; run with `apptainer --nv` or
# `docker run --gpus all`). TORCH_INDEX, when set, is the wheel index torch comes from instead
# (e.g. https://download.pytorch.org/whl/cu128). TORCH_VERSION must equal pyproject.toml's pin
# (tests/unit/test_container.py checks it).
#
# Used by `snakemake --sdm apptainer` through the Snakefile's `container:` (config 'container'),
# or as a BIDS App: docker run ... cortexgen/cortexgen:0.1.0 BIDS_DIR OUTPUT_DIR participant
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib

# libgomp1: OpenMP for the ITK/ANTs and SimpleITK wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# torch first, from the chosen index, so that `pip install -e .` finds its pin satisfied.
RUN set -eu; \
    if [ -n "$TORCH_INDEX" ]; then index="$TORCH_INDEX"; \
    elif [ "$TORCH_VARIANT" = "cpu" ]; then index="https://download.pytorch.org/whl/cpu"; \
    elif [ "$TORCH_VARIANT" = "cuda" ]; then index="https://pypi.org/simple"; \
    else echo "TORCH_VARIANT must be cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 1; fi; \
    pip install --index-url "$index" "torch==${TORCH_VERSION}"

WORKDIR /opt/cortexgen

# The package and its metadata first (a layer that changes only with the dependencies).
COPY pyproject.toml README.md LICENSE ./
COPY cortexgen/ cortexgen/
RUN pip install -e . && python -c "import torch, cortexgen; print('torch', torch.__version__)"

# The workflow: everything the Snakefile includes, runs and reads.
COPY Snakefile ./
COPY rules/ rules/
COPY workflow_scripts/ workflow_scripts/
COPY config/ config/
COPY envs/ envs/
COPY profiles/ profiles/
COPY report/ report/
COPY resources/ resources/

# The workflow's folder is readable by any user (apptainer runs as the calling user).
RUN snakemake --lint >/dev/null && rm -rf .snakemake && chmod -R a+rX /opt/cortexgen

ENTRYPOINT ["cortexgen"]
CMD ["--help"]
