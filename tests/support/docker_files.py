"""Reading docker/Dockerfile and checking it against the code: the settings it sets exist in
``assistant.config.Settings``, the commands parse with the CLI's own parser, the health check asks
a real route, the build copies what pip installs, and the pins are ``scripts/setup.sh``'s
(``compose_file`` checks docker/compose.yaml with the same helpers). Each check returns the problems it finds ([] when none), so a test can show
it catching a bad sample as well as passing the real files."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from assistant.cli import build_parser
from assistant.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PREFIX, DELIMITER = (
    Settings.model_config["env_prefix"],
    Settings.model_config["env_nested_delimiter"],
)
VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # FROM, RUN, COPY, ... (upper case)
    args: str  # the rest, continuation lines joined
    line: int
    stage: int  # 0 for the first FROM's stage


def instructions(text: str) -> list[Instruction]:
    """A Dockerfile's instructions: comments and blank lines dropped, ``\\`` continuations
    joined (a comment line inside a continuation is dropped too, as Docker does)."""
    found: list[Instruction] = []
    pending, start, stage = "", 0, -1
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not pending:
            start = number
        pending += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        keyword = keyword.upper()
        stage += keyword == "FROM"
        found.append(Instruction(keyword, " ".join(args.split()), start, stage))
        pending = ""
    return found


def env_of(instruction: Instruction) -> dict[str, str]:
    """``ENV A=1 B="two words"`` (or the old ``ENV A 1``) as a dict."""
    words = shlex.split(instruction.args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def exec_form(args: str) -> list[str]:
    """``["a", "b"]`` (exec form) or a shell form's words."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def interpolate(value: Any, variables: dict[str, str] | None = None) -> str:
    """A compose value with its ``${...}`` filled from ``variables``, as compose does from
    docker/.env: ``${VAR:-default}``, ``${VAR:?message}`` (a required one: ``"set"`` when not
    given), ``${VAR}``."""
    given = variables or {}

    def one(match: re.Match[str]) -> str:
        if given.get(match[1]):
            return given[match[1]]
        return "set" if match[2] == "?" else (match[3] or "")

    return VARIABLE.sub(one, str(value))


# -- settings -------------------------------------------------------------------------------------


def setting_problems(names: typing.Iterable[str]) -> list[str]:
    """Each ``ASSISTANT_*`` name must be a field of ``Settings`` (``ASSISTANT_LLM__BASE_URL``:
    ``Settings.llm.base_url``), down to a plain value."""
    found = []
    for name in sorted(set(names)):
        if not name.startswith(PREFIX):
            continue
        model: type[BaseModel] | None = Settings
        for part in name[len(PREFIX) :].lower().split(DELIMITER):
            field = model.model_fields.get(part) if model is not None else None
            if field is None:
                found.append(f"{name}: no setting {part!r} (assistant/config.py)")
                break
            kind = field.annotation
            model = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None
        else:
            if model is not None:
                found.append(f"{name}: a whole section, not a setting")
    return found


def value_problems(env: dict[str, str]) -> list[str]:
    """The values parse: ``Settings`` built from exactly these variables."""
    from pydantic import ValidationError

    chosen = {k: v for k, v in env.items() if k.startswith(PREFIX)}
    try:
        Settings(_env_file=None, **nested(chosen))  # type: ignore[call-arg]
    except ValidationError as exc:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return []


def nested(env: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, value in env.items():
        *sections, leaf = name[len(PREFIX) :].lower().split(DELIMITER)
        node = values
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = _typed(value)
    return values


def _typed(value: str) -> Any:
    """An environment string as pydantic-settings hands complex values over (JSON when it is)."""
    try:
        return json.loads(value) if value[:1] in "[{" else value
    except json.JSONDecodeError:
        return value


# -- commands -------------------------------------------------------------------------------------


def command_problems(argv: list[str]) -> list[str]:
    """``assistant ...`` must parse with the CLI's own parser (``assistant.cli.build_parser``)."""
    if argv[:1] != ["assistant"]:
        return [f"{argv}: not an assistant command"]
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit:
        return [f"{' '.join(argv)}: the assistant command refuses it"]
    return []


def shell_commands(script: str) -> list[list[str]]:
    """The ``assistant ...`` commands of a RUN line (split on ``&&`` and ``;``)."""
    commands = []
    for piece in re.split(r"&&|;", script):
        words = shlex.split(piece)
        if words[:1] == ["assistant"]:
            commands.append(words)
    return commands


def keyless_status(path: str) -> int:
    """What ``GET path`` answers without a key on a server that requires keys (the image's)."""
    from fastapi.testclient import TestClient

    from assistant.server.app import create_app
    from assistant.testing.language_models import ScriptedLM
    from assistant.testing.memory import MemoryStore

    settings = Settings(_env_file=None, auth={"open": False})  # type: ignore[call-arg]
    with TestClient(create_app(settings, llm=ScriptedLM("hi"), store=MemoryStore())) as client:
        return client.get(path).status_code


# -- the Dockerfile -------------------------------------------------------------------------------


def pins(text: str) -> set[str]:
    """The ``pip install --no-deps name==version`` pins of a script."""
    return set(re.findall(r"--no-deps\s+(?:--\S+\s+)*([A-Za-z0-9_.\-]+==[^\s\\]+)", text))


def packages() -> list[str]:
    """The top-level packages pip installs (pyproject's ``packages.find`` include patterns)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({pattern.rstrip("*").rstrip(".") for pattern in include})


def copied_before(steps: list[Instruction], run: Instruction) -> set[str]:
    """What the COPY instructions of ``run``'s stage before it brought in (sources)."""
    found: set[str] = set()
    for step in steps:
        if step.stage == run.stage and step.line < run.line and step.keyword == "COPY":
            words = [w for w in shlex.split(step.args) if not w.startswith("--")]
            found.update(w.rstrip("/").removeprefix("./") for w in words[:-1])
    return found


def dockerfile_problems(text: str, setup_sh: str) -> list[str]:
    steps = instructions(text)
    found: list[str] = []
    env = {k: v for s in steps if s.keyword == "ENV" for k, v in env_of(s).items()}
    found += setting_problems(env)
    last = max(s.stage for s in steps)
    for step in steps:
        if step.keyword == "RUN":
            for argv in shell_commands(step.args):
                found += command_problems(argv)
            found += _pip_problems(steps, step)
    final = [s for s in steps if s.stage == last]
    cmd = [s for s in final if s.keyword == "CMD"]
    if not cmd:
        return [*found, "the final stage has no CMD"]
    argv = exec_form(cmd[-1].args)
    found += command_problems(argv)
    found += _port_problems(final, argv)
    if pins(text) != pins(setup_sh):
        found.append(
            f"pins {sorted(pins(text))} are not scripts/setup.sh's {sorted(pins(setup_sh))}"
        )
    if "--extra-index-url https://download.pytorch.org/whl/cpu" not in text:
        found.append("torch's CPU wheel index is not given")
    if not any(s.keyword == "USER" and s.args not in ("root", "0") for s in final):
        found.append("the server runs as root")
    return found


def _pip_problems(steps: list[Instruction], run: Instruction) -> list[str]:
    """A ``pip install`` must have the files it reads: ``-r``/``-c`` files, and for ``.`` the
    project's pyproject.toml and readme, and (once the code is installed) every package."""
    found: list[str] = []
    have = copied_before(steps, run)
    for piece in re.split(r"&&|;", run.args):
        words = shlex.split(piece)
        if "install" not in words or not {"pip", "-m"} & set(words):
            continue
        needs = {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-r", "-c")}
        if any(w == "." or w.startswith(".[") for w in words):
            project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
            needs |= {"pyproject.toml", project["readme"]}
            if "--no-deps" in words:  # the code itself is installed here
                needs |= set(packages())
        found += [
            f"line {run.line}: pip reads {n}, not copied before it" for n in sorted(needs - have)
        ]
    return found


def _port_problems(final: list[Instruction], argv: list[str]) -> list[str]:
    found: list[str] = []
    exposed = {s.args.split("/")[0] for s in final if s.keyword == "EXPOSE"}
    port = argv[argv.index("--port") + 1] if "--port" in argv else "8000"
    if port not in exposed:
        found.append(f"the server's port {port} is not EXPOSEd ({sorted(exposed)})")
    checks = [s for s in final if s.keyword == "HEALTHCHECK"]
    if not checks:
        return [*found, "no HEALTHCHECK"]
    probe = exec_form(checks[-1].args.split(" CMD ", 1)[-1])
    url = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s]*)", " ".join(probe))
    if url is None:
        return [*found, f"the HEALTHCHECK asks no local URL: {probe}"]
    if url[1] != port:
        found.append(f"the HEALTHCHECK asks port {url[1]}, the server listens on {port}")
    status = keyless_status(url[2])
    if status != 200:
        found.append(f"the HEALTHCHECK asks {url[2]}, which answers {status} without a key")
    return found
