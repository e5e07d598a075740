"""``assistant bench`` / ``python -m bench``: run the benchmark entries, write one JSON report, print a table.

Entries: ``gateway`` (``bench.gateway``), ``redis`` (``bench.redis_trips``), ``ttft_by_turn``
(``bench.ttft``), ``concurrency`` (``bench.concurrency``: 1, 4 and 8 sessions at once on the real
model over the real server) ``image`` (``bench.image``), ``asr`` (``bench.asr``) and ``voice_to_first_token``
(``bench.voice``: end of speech -> first reply token over the real server, against the same
question typed); the last four are imported only when run. ``fuzz`` (``bench.fuzz_run``, run
only when asked for: ``--fuzz`` or ``--only fuzz``) drives generated client events and REST
requests at a real server and reports what it ran and found; ``soak`` (``bench.soak``: ``--soak``
or ``--only soak``) runs mixed turns against a real server for minutes and reports its memory,
descriptors and errors. An entry that fails records
``{"error": "..."}`` and the others still run. Every entry starts what it measures and stops it
in ``finally`` (Ctrl-C too); an interrupted run still writes the JSON of the entries done so far.
Speed numbers come with a baseline measured side by side in the same run, and their ratio: the
machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENTRIES = ("gateway", "redis", "ttft_by_turn", "concurrency", "image", "asr",
           "voice_to_first_token", "kb", "webhooks")  # fmt: skip
#: Entries run only when asked for (``--only`` or their flag): not benchmarks.
EXTRA_ENTRIES = ("fuzz", "soak")


def _gateway(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    from bench.gateway import GatewayConfig, run_gateway

    config = GatewayConfig.quick() if quick else GatewayConfig()
    names = ("sessions", "turns", "total_turns", "idle_sessions", "clients", "reps", "workers",
             "single_worker")  # fmt: skip
    for name in names:
        if options.get(name) is not None:
            setattr(config, name, options[name])
    return run_gateway(config)


def _redis(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    from bench.redis_trips import run_redis

    return run_redis(turns=options.get("redis_turns") or (10 if quick else 50))


def _ttft(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    from bench.ttft import measure_ttft_by_turn  # needs torch: imported only when run

    return dict(measure_ttft_by_turn(quick=quick))


def _image(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    from bench.image import measure_image  # needs torch: imported only when run

    return dict(measure_image(quick=quick))


def _concurrency(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    """Tokens/s and first tokens at 1, 4 and 8 sessions at once on the real model and server."""
    from bench.concurrency import measure_concurrency  # needs the model: imported only when run

    return measure_concurrency(quick=quick)


def _kb(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    from bench.kb import measure_kb  # needs the embedding model: imported only when run

    return measure_kb(quick=quick)


def _webhooks(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    from bench.webhooks import measure_webhooks

    return measure_webhooks(quick=quick)


def _asr(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    """End of speech -> final transcript: streaming vs transcribing after the end."""
    from bench.asr import measure_asr  # needs the speech models: imported only when run

    return dict(measure_asr(quick=quick))


def _fuzz(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    """The fuzzer (``bench.fuzz_run``) against a real server, longer than the tests run it."""
    from bench.fuzz_run import run_fuzz  # needs hypothesis and schemathesis: imported only when run

    examples = options.get("fuzz_examples") or (300 if quick else 2000)
    return run_fuzz(examples, minutes=options.get("fuzz_minutes"))


def _soak(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    """Mixed turns against a real server for minutes: memory, descriptors, errors (``bench.soak``)."""
    from bench.soak import SoakConfig, run_soak

    config = SoakConfig.quick() if quick else SoakConfig()
    if options.get("sessions") is not None:
        config.sessions = options["sessions"][0]  # 0: the real model's run only
    for name in ("minutes", "think_s", "real_sessions", "workers"):
        if options.get(name) is not None:
            setattr(config, name, options[name])
    return run_soak(config)


def _voice(quick: bool, options: dict[str, Any]) -> dict[str, Any]:
    """End of speech -> first reply token over the real server, against a typed turn."""
    from bench.voice import measure_voice_to_first_token  # needs the models

    return dict(measure_voice_to_first_token(quick=quick))


RUNNERS: dict[str, Callable[[bool, dict[str, Any]], dict[str, Any]]] = {
    "gateway": _gateway,
    "redis": _redis,
    "ttft_by_turn": _ttft,
    "concurrency": _concurrency,
    "image": _image,
    "asr": _asr,
    "kb": _kb,
    "webhooks": _webhooks,
    "voice_to_first_token": _voice,
    "fuzz": _fuzz,
    "soak": _soak,
}


def _meta(quick: bool) -> dict[str, Any]:
    return {
        "quick": quick,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_bench(
    quick: bool,
    json_path: Path | None,
    only: list[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Run the entries (all, or ``only``) and return the report; ``json_path`` gets it as JSON.
    ``options`` (all optional): ``sessions`` (concurrency levels), ``turns`` (per session),
    ``total_turns`` (per level, at least), ``idle_sessions``, ``clients`` (load-generator
    processes), ``reps`` (of each gateway run), ``single_worker`` (the gateway's one-worker
    comparison; off in ``quick``), ``redis_turns``, ``fuzz_examples`` (cases per
    suite), ``fuzz_minutes`` (repeat the fuzz rounds until then)."""
    chosen = list(only) if only else list(ENTRIES)
    unknown = [name for name in chosen if name not in RUNNERS]
    if unknown:
        known = ", ".join((*ENTRIES, *EXTRA_ENTRIES))
        raise ValueError(f"unknown bench entries {unknown}; known: {known}")
    report: dict[str, Any] = {"meta": _meta(quick)}
    started = time.monotonic()
    try:
        for name in chosen:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            entry_started = time.monotonic()
            try:
                result = RUNNERS[name](quick, options)
            except Exception as exc:  # noqa: BLE001 - recorded in the report; the others still run
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result.setdefault("entry_wall_s", round(time.monotonic() - entry_started, 1))
            report[name] = result
    finally:
        report["meta"]["wall_s"] = round(time.monotonic() - started, 1)
        if json_path is not None:
            json_path = Path(json_path)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))
    return report


# -- the table ------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _row(entry: str, metric: str, value: Any, baseline: Any = None) -> tuple[str, ...]:
    ratio = None
    if isinstance(value, (int, float)) and isinstance(baseline, (int, float)) and baseline:
        ratio = round(value / baseline, 3)
    return (entry, metric, _fmt(value), _fmt(baseline), _fmt(ratio))


def _gateway_rows(gw: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for level in gw.get("levels", []):
        n, g, e = level["sessions"], level["gateway"], level["echo"]
        failed = "" if g.get("complete", True) else f" [{g['failed_sessions']} sessions FAILED]"
        rows.append(
            _row("gateway", f"turns/s @ {n} sessions{failed}", g["turns_per_s"], e["turns_per_s"])
        )
        rows.append(_row("gateway", f"p50 ms @ {n}", g["p50_ms"], e["p50_ms"]))
        rows.append(_row("gateway", f"p99 ms @ {n}", g["p99_ms"], e["p99_ms"]))
        rows.append(_row("gateway", f"server CPU ms/turn @ {n}", g.get("server_cpu_ms_per_turn"),
                         e.get("server_cpu_ms_per_turn")))  # fmt: skip
    single = gw.get("single_worker")
    if single:
        n = single["sessions"]
        rows.append(_row("gateway", f"1 worker each: turns/s @ {n}", single["turns_per_s"],
                         single["echo_turns_per_s"]))  # fmt: skip
        rows.append(_row("gateway", f"1 worker each: server CPU ms/turn @ {n}",
                         single["server_cpu_ms_per_turn"], single["echo_server_cpu_ms_per_turn"]))  # fmt: skip
    rows.append(_row("gateway", "idle KB/session (vs echo)", gw.get("idle_session_kb"),
                     gw.get("echo_idle_session_kb")))  # fmt: skip
    rows.append(_row("gateway", "sessions reached", gw.get("sessions")))
    return rows


def _flat_rows(entry: str, data: dict[str, Any]) -> list[tuple[str, ...]]:
    """Numeric fields; ``X`` is shown against ``X_no_cache`` when both exist."""
    rows = []
    for key, value in data.items():
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if key.endswith("_no_cache") or not numeric:
            continue
        rows.append(_row(entry, key, value, data.get(f"{key}_no_cache")))
    return rows


def format_table(report: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [("entry", "metric", "value", "baseline", "ratio")]
    for name in (*ENTRIES, *EXTRA_ENTRIES):
        data = report.get(name)
        if not isinstance(data, dict):
            continue
        if "error" in data:
            rows.append((name, "error", str(data["error"])[:100], "-", "-"))
        elif name == "gateway":
            rows.extend(_gateway_rows(data))
        elif name == "webhooks":
            from bench.webhooks import table_rows as webhook_rows

            rows.extend(_row(*row) for row in webhook_rows(data))
        elif name == "soak":
            from bench.soak import table_rows

            rows.extend(_row(*row) for row in table_rows(data))
        else:
            rows.extend(_flat_rows(name, data))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                  for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"wall time {report['meta'].get('wall_s', '-')} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assistant bench", description="Run the benchmarks, print a table, write JSON."
    )
    parser.add_argument("--quick", action="store_true", help="CI-sized runs (fewer turns, 1 rep)")
    parser.add_argument("--json", metavar="PATH", help="write the report here")
    parser.add_argument(
        "--only", help=f"comma-separated entries: {','.join((*ENTRIES, *EXTRA_ENTRIES))}"
    )
    parser.add_argument(
        "--sessions", help="gateway concurrency levels (default 1,100,1000); soak: sessions (200)"
    )
    parser.add_argument(
        "--workers", type=int, help="gateway: worker processes per server (default: one per core)"
    )
    fuzz = parser.add_argument_group("fuzz", "generated client events against a real server")
    fuzz.add_argument("--fuzz", action="store_true", help="run the fuzzer (the 'fuzz' entry) only")
    fuzz.add_argument("--fuzz-examples", type=int, metavar="N", help="cases per suite (2000)")
    fuzz.add_argument("--fuzz-minutes", type=float, metavar="M", help="repeat rounds for M minutes")
    soak = parser.add_argument_group("soak", "mixed turns for minutes: memory, descriptors, errors")
    soak.add_argument("--soak", action="store_true", help="run the soak (the 'soak' entry) only")
    soak.add_argument("--minutes", type=float, metavar="M", help="soak: minutes of each run (10)")
    soak.add_argument("--think-s", type=float, metavar="S", help="soak: pause after a reply (1.0)")
    soak.add_argument("--real-sessions", type=int, metavar="N",
                      help="soak: sessions on the real model afterwards (4; 0: none)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m bench`` (and ``assistant bench``, which runs this module as a process)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    if args.fuzz:
        only = ["fuzz"]
    if args.soak:
        only = ["soak"]
    try:
        report = run_bench(
            args.quick,
            Path(args.json) if args.json else None,
            only,
            sessions=[int(n) for n in args.sessions.split(",")] if args.sessions else None,
            workers=args.workers,
            fuzz_examples=args.fuzz_examples,
            fuzz_minutes=args.fuzz_minutes,
            minutes=args.minutes,
            think_s=args.think_s,
            real_sessions=args.real_sessions,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = any(
        isinstance(v, dict) and ("error" in v or v.get("findings")) for v in report.values()
    )
    return 1 if failed else 0
