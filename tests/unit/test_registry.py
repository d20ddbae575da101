"""The generator registry: what each generator is, and that config, schema and networks agree with it."""

from __future__ import annotations

import pytest
import yaml

from cortexgen.diffusion import registry
from tests.conftest import REPO


def test_entries_say_what_each_generator_trains_on_and_writes():
    bridge, ddpm, deform, sdm = (registry.generator(name) for name in ("bridge", "ddpm", "deform", "sdm"))
    assert bridge.training_roles(["pialsdf", "whitesdf"]) == ("images", "pialsdf", "whitesdf")
    assert ddpm.training_roles(["pialsdf"]) == ("images",)
    assert deform.training_roles(["pialsdf"]) == sdm.training_roles([]) == ("fields",)
    assert [entry.conditional for entry in (bridge, ddpm, deform, sdm)] == [True, False, False, False]
    assert [entry.network for entry in (bridge, ddpm, deform, sdm)] == [True, True, True, False]
    assert bridge.sample_outputs == ddpm.sample_outputs == ("images",)
    assert deform.sample_outputs == sdm.sample_outputs == ("images", "fields")
    section = {"schedule": {"num_steps": 10}, "sample_steps": 5, "grid": [8, 8, 8], "objective": "grad"}
    assert ddpm.generator_settings(section) == {"schedule": {"num_steps": 10}, "sample_steps": 5}
    assert bridge.generator_settings(section) == {"schedule": {"num_steps": 10}, "sample_steps": 5,
                                                  "objective": "grad"}
    with pytest.raises(ValueError, match="unknown generator 'gan'"):
        registry.generator("gan")
    with pytest.raises(ValueError, match="data must be one of"):
        registry.GeneratorEntry("x", "meshes", False, "ddpm", 1)


def test_network_generators_have_their_entrys_process_and_channels():
    from cortexgen.diffusion.generators import BridgeGenerator, DDPMGenerator, make_generator

    for name, entry in registry.GENERATORS.items():
        if not entry.network:
            with pytest.raises(ValueError, match="has no network"):
                make_generator(name, {})
            continue
        generator = make_generator(name, {})
        assert generator.name == name
        assert isinstance(generator, BridgeGenerator if entry.process == "bridge" else DDPMGenerator)
        assert generator.out_channels == entry.channels


def test_every_generator_has_a_config_section_and_resources_in_config_and_schema():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    for name in registry.GENERATORS:
        assert name in config["diffusion"] and name in schema["properties"]["diffusion"]["properties"]
        for key in (f"train_{name}", f"sample_{name}"):
            assert key in config["resources"], key
            assert schema["properties"]["resources"]["properties"][key] == {"$ref": "#/definitions/gpu_rule_resources"}
