"""Reading docker/compose.yaml and checking it against the code and the Dockerfile: the
services and how they wait for each other, Redis's persistence, the ports, the settings each
service sets (``docker_files.setting_problems``), that ``assistant serve`` on the image's address
starts with that environment and not in open mode, and the gpu profile's vLLM behind the
OpenAI-compatible adapter. Each check returns the problems it finds ([] when none)."""

from __future__ import annotations

import re
from typing import Any

from assistant.config import Settings
from tests.support.docker_files import (
    DELIMITER,
    PREFIX,
    ROOT,
    VARIABLE,
    exec_form,
    instructions,
    interpolate,
    nested,
    setting_problems,
    value_problems,
)


def environment(service: dict[str, Any], variables: dict[str, str] | None = None) -> dict[str, str]:
    """A service's environment (a mapping or a list of ``K=V``), values interpolated."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(v if v is not None else "", variables) for k, v in env.items()}


def env_file_names(text: str) -> set[str]:
    """The variable names an env file (``docker/example.env``) sets."""
    return {line.split("=", 1)[0].strip() for line in text.splitlines()
            if "=" in line and not line.lstrip().startswith("#")}  # fmt: skip


def waits_for(service: dict[str, Any], other: str) -> str | None:
    """The condition ``service`` starts on ``other`` with (a list form means ``service_started``)."""
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return "service_started" if other in depends else None
    return (
        (depends.get(other) or {}).get("condition", "service_started") if other in depends else None
    )


def compose_problems(doc: dict[str, Any], dockerfile: str) -> list[str]:
    services = doc.get("services", {})
    found: list[str] = []
    for name, service in services.items():
        env = environment(service)
        found += [f"{name}: {p}" for p in setting_problems(env)]
        found += [f"{name}: {p}" for p in value_problems(env)]
        for other in service.get("depends_on", {}) or {}:
            if other not in services:
                found.append(f"{name} depends on {other}, which is no service")
    for name in ("redis", "assistant", "vllm", "assistant-gpu"):
        if name not in services:
            found.append(f"no {name} service")
    if found:
        return found
    found += _redis_problems(doc)
    for name in ("assistant", "assistant-gpu"):
        found += [f"{name}: {p}" for p in _assistant_problems(services, name, dockerfile)]
    found += _gpu_problems(services)
    return found


def _redis_problems(doc: dict[str, Any]) -> list[str]:
    redis = doc["services"]["redis"]
    found = []
    if not str(redis.get("image", "")).startswith("redis:7"):
        found.append("redis: not the redis:7 image")
    command = redis.get("command") or []
    if "--appendonly" not in command or command[command.index("--appendonly") + 1] != "yes":
        found.append("redis: --appendonly yes is not set")
    volumes = [str(v).split(":")[0] for v in redis.get("volumes", [])]
    if not any(v in (doc.get("volumes") or {}) for v in volumes):
        found.append("redis: its data is not on a named volume")
    if "healthcheck" not in redis:
        found.append("redis: no healthcheck")
    return found


def _assistant_problems(services: dict[str, Any], name: str, dockerfile: str) -> list[str]:
    service, found = services[name], []
    build = service.get("build") or {}
    if not (ROOT / "docker" / build.get("context", "") / build.get("dockerfile", "")).is_file():
        found.append(f"build {build} names no Dockerfile")
    env = environment(service)
    url = re.fullmatch(r"redis://([\w-]+):(\d+)/\d+", env.get(f"{PREFIX}REDIS_URL", ""))
    if url is None or url[1] not in services:
        found.append(f"{PREFIX}REDIS_URL does not name the redis service")
    if waits_for(service, "redis") != "service_healthy":
        found.append("does not wait for a healthy redis")
    if not service.get("restart"):
        found.append("no restart policy")
    steps = instructions(dockerfile)
    exposed = {s.args.split("/")[0] for s in steps if s.keyword == "EXPOSE"}
    inner = {str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])}
    if not inner or not inner <= exposed:
        found.append(f"ports {service.get('ports')} do not reach the image's {sorted(exposed)}")
    found += _auth_problems(env, dockerfile)
    return found


def _auth_problems(env: dict[str, str], dockerfile: str) -> list[str]:
    """``assistant serve`` on the image's address with this environment starts, and not open."""
    from assistant.cli import _checked_auth
    from assistant.server.components import open_mode

    cmd = [s for s in instructions(dockerfile) if s.keyword == "CMD"][-1]
    argv = exec_form(cmd.args)
    host = argv[argv.index("--host") + 1] if "--host" in argv else "127.0.0.1"
    settings = Settings(**nested({k: v for k, v in env.items() if k.startswith(PREFIX)}))
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"host": host})}
    )
    checked = _checked_auth(settings, insecure="--insecure" in argv)
    if checked is None:
        return [f"assistant serve --host {host} refuses to start with this environment"]
    return [f"open mode on {host}: anyone may use it"] if open_mode(checked) else []


def _gpu_problems(services: dict[str, Any]) -> list[str]:
    from assistant.registry import LLM_ADAPTERS

    vllm, front, found = services["vllm"], services["assistant-gpu"], []
    for name, service in (("vllm", vllm), ("assistant-gpu", front)):
        if "gpu" not in service.get("profiles", []):
            found.append(f"{name} is not in the gpu profile")
    if not str(vllm.get("image", "")).startswith("vllm/vllm-openai"):
        found.append("vllm: not the vllm/vllm-openai image")
    command = [str(word) for word in vllm.get("command", [])]
    for flag in ("--model", "--tensor-parallel-size"):
        if flag not in command:
            found.append(f"vllm: no {flag}")
    if "--tensor-parallel-size" in command:
        if not VARIABLE.search(command[command.index("--tensor-parallel-size") + 1]):
            found.append("vllm: --tensor-parallel-size is not taken from a variable")
    devices = vllm.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    if not any("gpu" in d.get("capabilities", []) for d in devices):
        found.append("vllm: no GPU reserved")
    env = environment(front)
    llm = f"{PREFIX}LLM{DELIMITER}"
    if env.get(f"{llm}ADAPTER") not in LLM_ADAPTERS:
        found.append(f"assistant-gpu: adapter {env.get(f'{llm}ADAPTER')!r} is not in the registry")
    base = re.fullmatch(r"http://([\w-]+):(\d+)/v1", env.get(f"{llm}BASE_URL", ""))
    port = command[command.index("--port") + 1] if "--port" in command else "8000"  # vLLM's
    if base is None or (base[1], base[2]) != ("vllm", port):
        found.append(f"assistant-gpu: its BASE_URL is not http://vllm:{port}/v1")
    if (
        "--model" in command
        and str(front["environment"].get(f"{llm}MODEL")) != command[command.index("--model") + 1]
    ):
        found.append("assistant-gpu: its MODEL is not the model vllm serves")
    if waits_for(front, "vllm") != "service_healthy":
        found.append("assistant-gpu: does not wait for a healthy vllm")
    return found
