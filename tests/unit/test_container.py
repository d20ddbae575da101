"""The container recipes (Dockerfile, cortexgen.def) and the Snakefile's container: checked as text
(no image is built here): the same torch pin as pyproject.toml, torch's CPU build by default, and
every file the workflow includes, runs or reads copied into the image."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def torch_pin() -> str:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [dependency for dependency in dependencies if re.match(r"torch\s*==", dependency)]
    return pin.split("==")[1].strip()


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(.*)$", (REPO / "Dockerfile").read_text(), re.M))


def docker_copied() -> list[str]:
    """Sources of the Dockerfile's COPY lines (no trailing slash)."""
    sources = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            sources += [source.rstrip("/") for source in line.split()[1:-1]]
    return sources


def apptainer_copied() -> list[str]:
    text = (REPO / "cortexgen.def").read_text()
    section = re.search(r"^%files\n(.*?)(?=^%)", text, re.S | re.M).group(1)
    return [line.split()[0].rstrip("/") for line in section.splitlines() if line.strip()]


def workflow_needs() -> set[str]:
    """Repository paths the workflow includes, runs or reads: included rule files, scripts, conda
    envs and report captions (relative to rules/), its config and schema, the shipped demo and
    templates, the profiles, the library (also reached through workflow_scripts/cortexgen)."""
    snakefile = (REPO / "Snakefile").read_text()
    needs = {"Snakefile", "pyproject.toml", "cortexgen", "config/config.yaml", "config/schema.yaml", "profiles"}
    needs |= set(re.findall(r'^include: "([^"]+)"', snakefile, re.M))
    needs |= set(re.findall(r'^report: "([^"]+)"', snakefile, re.M))
    for rule_file in (REPO / "rules").glob("*.smk"):
        text = rule_file.read_text()
        for relative in re.findall(r'(?:script|conda):\s*"([^"]+)"', text) + re.findall(r'caption="([^"]+)"', text):
            needs.add((REPO / "rules" / relative).resolve().relative_to(REPO.resolve()).as_posix())
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    needs |= {config["bids_dir"], config["preprocess"]["template"], config["preprocess"]["template_brain_mask"]}
    return needs


def covered(path: str, sources: list[str]) -> bool:
    return any(path == source or path.startswith(source + "/") for source in sources)


def test_the_workflow_needs_what_this_test_thinks_it_does():
    needs = workflow_needs()
    assert "rules/preprocess.smk" in needs and "workflow_scripts/preprocess.py" in needs
    assert "envs/cortexgen.yaml" in needs and "report/loss.rst" in needs
    for path in needs:
        assert (REPO / path).exists(), path


def test_dockerfile_installs_pyprojects_torch_pin_cpu_by_default_then_the_package():
    args = dockerfile_args()
    assert args["TORCH_VERSION"] == torch_pin()
    assert args["TORCH_VARIANT"] == "cpu" and args["TORCH_INDEX"] == ""
    text = (REPO / "Dockerfile").read_text()
    assert '"torch==${TORCH_VERSION}"' in text
    assert '"$TORCH_VARIANT" = "cpu" ]; then index="https://download.pytorch.org/whl/cpu"' in text
    # torch before the package, so that pip keeps the chosen build.
    assert text.index('"torch==${TORCH_VERSION}"') < text.index("RUN pip install -e .")


def test_dockerfile_copies_every_file_the_workflow_needs():
    sources = docker_copied()
    for path in workflow_needs():
        assert covered(path, sources), f"the Dockerfile does not COPY {path}"
    # The package is copied before `pip install -e .`, the workflow after it.
    assert "cortexgen" in sources and "workflow_scripts" in sources


def test_apptainer_definition_matches_the_dockerfile():
    text = (REPO / "cortexgen.def").read_text()
    arguments = dict(re.findall(r"^\s+(TORCH_\w+)=(.*)$", text, re.M))
    assert arguments == {"TORCH_VERSION": torch_pin(), "TORCH_VARIANT": "cpu", "TORCH_INDEX": ""}
    assert re.search(r"^From: (\S+)", text, re.M).group(1) == re.search(r"^FROM (\S+)",
                                                                         (REPO / "Dockerfile").read_text(), re.M).group(1)
    sources = apptainer_copied()
    for path in workflow_needs():
        assert covered(path, sources), f"cortexgen.def does not copy {path}"


def test_snakefile_container_is_configs_image_of_this_version_and_readme_documents_it():
    snakefile = (REPO / "Snakefile").read_text()
    assert re.search(r'^container: config\["container"\]$', snakefile, re.M)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    image = f"docker://cortexgen/cortexgen:{version}"
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    assert schema["properties"]["container"]["default"] == image
    assert yaml.safe_load((REPO / "config" / "config.yaml").read_text())["container"] == image
    readme = (REPO / "README.md").read_text()
    assert image in readme and "--sdm apptainer" in readme
    assert f"docker build -t cortexgen/cortexgen:{version} ." in readme
