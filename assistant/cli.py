"""The ``assistant`` command: ``serve``, ``chat``, ``prepare-models``, ``transcribe``,
``train-projector``, ``keys``, ``kb``, ``protocol-schema`` and ``bench``.

Every command takes ``--data-dir`` (default ``ASSISTANT_DATA_DIR`` or a per-user directory); all
other settings come from ``ASSISTANT_*`` environment variables (see the README).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from assistant.config import Settings


def _settings(args: argparse.Namespace, **updates: object) -> Settings:
    overrides: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir).expanduser()
    return Settings(**overrides, **updates)  # type: ignore[arg-type]


def cmd_prepare_models(args: argparse.Namespace) -> int:
    from assistant.registry import prepare_models

    settings = _settings(args)
    for line in prepare_models(settings, progress=not args.quiet):
        print(line)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM (both stop gracefully, exit code 0); the private
    redis-server, when there is one, is stopped on every way out."""
    from assistant import heap

    settings = _settings(args)
    # First: before any thread allocates; the workers inherit it.
    heap.tune_allocator(model_in_process=settings.llm.adapter.startswith("transformers"))
    from assistant.processes import Stopped, stop_on_signals
    from assistant.registry import prepare_models, start_embedded_redis

    server = settings.server.model_copy(
        update={"host": args.host or settings.server.host, "port": args.port or settings.server.port}
    )
    settings = settings.model_copy(update={"server": server})
    settings = _checked_auth(settings, insecure=args.insecure)
    if settings is None:
        return 2
    from assistant.server import logs

    logs.configure(args.log_level, settings.server.log_format)
    embedded = None
    with stop_on_signals() as signals:
        try:
            for line in prepare_models(settings, progress=True, also=False):
                print(line, file=sys.stderr)
            if not settings.redis_url:
                embedded = start_embedded_redis(settings)
                settings = settings.model_copy(update={"redis_url": embedded.url})
                print(f"redis: private redis-server at {embedded.url}, data in "
                      f"{settings.redis_dir}, started again if it dies", file=sys.stderr)  # fmt: skip
            _run_server(settings, args.workers, args.log_level)
        except Stopped as stopped:
            print(f"stopped by {stopped}", file=sys.stderr)
        finally:
            signals.hold()  # a signal now does not cut the clean-up short
            if embedded is not None:
                embedded.stop()
    return 0


def _checked_auth(settings: Settings, *, insecure: bool) -> Settings | None:
    """Open mode (anonymous callers) only on a loopback bind, unless ``--insecure``; None (and
    a message) when the server must not start."""
    from assistant.server.components import is_loopback_host, open_mode

    host = settings.server.host
    if insecure:
        print(f"warning: --insecure: anyone who reaches {host} may use this server without a "
              "key", file=sys.stderr)  # fmt: skip
        return settings.model_copy(
            update={"auth": settings.auth.model_copy(update={"open": True})}
        )
    if open_mode(settings) and not is_loopback_host(host):
        print(f"error: open mode (ASSISTANT_AUTH__OPEN=true) on {host}, which is not a loopback "
              "address, would let anyone use this server; create keys (assistant keys create) "
              "or pass --insecure", file=sys.stderr)  # fmt: skip
        return None
    if not open_mode(settings):
        print(f"auth: keys required on {host} (assistant keys create --tenant T --scope admin)",
              file=sys.stderr)  # fmt: skip
    return settings


def _run_server(settings: Settings, workers: int, log_level: str) -> None:
    """uvicorn until a signal: it stops gracefully, then the signal comes back as ``Stopped``
    (or, with several workers, ``serve_balanced`` returns)."""
    import uvicorn

    from assistant.server.http_protocol import uvicorn_options

    host, port = settings.server.host, settings.server.port
    if workers <= 1:
        from assistant.server.app import create_app

        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                    log_config=None,  # logging is ours (server.logs)
                    **uvicorn_options(settings.server))  # fmt: skip
        return
    # Workers are separate processes: they read their settings from the environment.
    os.environ["ASSISTANT_REDIS_URL"] = settings.redis_url
    os.environ["ASSISTANT_DATA_DIR"] = str(settings.data_dir)
    os.environ["ASSISTANT_SERVER__HOST"] = host  # open mode is decided by the bind address
    os.environ["ASSISTANT_SERVER__PORT"] = str(port)
    if settings.auth.open is not None:
        os.environ["ASSISTANT_AUTH__OPEN"] = str(settings.auth.open).lower()
    from assistant.server.workers import balanced_workers_supported, serve_balanced

    if balanced_workers_supported():  # one socket per worker: connections spread evenly
        serve_balanced("assistant.server.app:app_from_env", host, port, workers, log_level)
    else:
        uvicorn.run("assistant.server.app:app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level,
                    **uvicorn_options(settings.server))  # fmt: skip


def cmd_chat(args: argparse.Namespace) -> int:
    import asyncio

    from assistant.chat_client import run_chat

    return asyncio.run(
        run_chat(
            args.url,
            session_id=args.session,
            instructions=args.instructions,
            message=args.message,
        )
    )


def run_bench(argv: Sequence[str]) -> int:
    """``assistant bench ...``: the benchmarks are a package of their own (``bench``), run as a
    process with its own arguments (``python -m bench --help``)."""
    return subprocess.call([sys.executable, "-m", "bench", *argv])


def cmd_train_projector(args: argparse.Namespace) -> int:
    from assistant.registry import train_projector  # needs torch: loaded only here

    result = train_projector(
        _settings(args), images=args.images, captions=args.captions, out=args.out,
        projector=args.projector, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        max_steps=args.max_steps, seed=args.seed,
    )  # fmt: skip
    out = Path(args.out).expanduser().resolve()
    print(f"projector: {args.projector}, {result.steps} steps on {result.pairs} captions of "
          f"{result.images} images; loss {result.initial_loss:.3f} -> {result.final_loss:.3f}")
    print(f"saved in {out}; serve it with: ASSISTANT_VISION__PROJECTOR={out} assistant serve")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    """voice: transcribe an audio file with the configured speech-to-text model, no server."""
    import asyncio
    import json

    from assistant.registry import build_speech_to_text
    from assistant.voice.audio import AudioLimits
    from assistant.voice.uploads import transcribe_file

    settings = _settings(args)
    if args.model:
        settings = settings.model_copy(
            update={"asr": settings.asr.model_copy(update={"model": args.model})}
        )
    try:
        source = sys.stdin.buffer if args.file == "-" else Path(args.file).expanduser().open("rb")
        with source:
            data = source.read()
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    limits = AudioLimits.uploads(settings.voice)
    stt = build_speech_to_text(settings)
    transcript = asyncio.run(transcribe_file(stt, data, limits=limits, language=args.language))
    if args.json:
        print(json.dumps({"text": transcript.text, "language": transcript.language,
                          "duration": round(transcript.duration_s, 3)}))  # fmt: skip
    else:
        print(transcript.text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistant", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data-dir", help="data directory (models, embedded Redis)")
        return sub

    serve = add("serve", "Run the server (WebSocket /v1/realtime, REST /v1/..., /healthz, /metrics).")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--insecure", action="store_true",
                       help="allow callers without a key on a non-loopback address (open mode)")  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    chat = add("chat", "Chat with a running server in the terminal, the reply streaming as it comes.")
    chat.add_argument("--url", default="ws://127.0.0.1:8000/v1/realtime", help="server WebSocket URL")
    chat.add_argument("--session", help="resume this session id")
    chat.add_argument("--instructions", help="system prompt for the session")
    chat.add_argument("-m", "--message", action="append", help="send this message and exit (repeatable)")
    chat.set_defaults(func=cmd_chat)

    prepare = add("prepare-models", "Prepare the default models under the data directory (once).")
    prepare.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=cmd_prepare_models)

    commands.add_parser(
        "bench", add_help=False,
        help="Run the benchmarks, print a table, write JSON (see 'assistant bench --help').",
    )  # fmt: skip; its arguments are bench's own: main() hands them over untouched

    transcribe = add(
        "transcribe",
        "Print the transcript of an audio file (WAV, WebM/Opus, OGG, MP3, ...; '-' reads stdin) "
        "made by the configured speech-to-text model (Whisper tiny.en by default).",
    )
    transcribe.add_argument("file", help="the audio file, or - for standard input")
    transcribe.add_argument("--language", help="force a language (e.g. en)")
    transcribe.add_argument(
        "--model", help="tiny.en, base, a CTranslate2 directory / hub id (openai_whisper: a .pt)"
    )
    transcribe.add_argument(
        "--json", action="store_true", help='print {"text", "language", "duration"}'
    )
    transcribe.set_defaults(func=cmd_transcribe)

    from assistant import cli_kb, cli_keys, cli_protocol

    cli_keys.add_commands(commands, add)
    cli_kb.add_commands(commands, add)
    cli_protocol.add_commands(commands)

    train = add(
        "train-projector",
        "Train an image projector on image-caption pairs (LLaVA stage 1: frozen vision encoder and "
        "language model, only the projector learns). ASSISTANT_VISION__PROJECTOR=<out dir> makes "
        "`serve` use it.",
    )
    train.add_argument("--images", required=True, help="directory of the images")
    train.add_argument("--captions", required=True,
                       help='JSONL file, one {"image": "file.png", "caption": "..."} per line, '
                            "image paths relative to --images")  # fmt: skip
    train.add_argument("--out", required=True, help="directory to save the projector in")
    train.add_argument("--projector", default="mlp2x_gelu", choices=["mlp2x_gelu", "linear"])
    train.add_argument("--epochs", type=int, default=1, help="passes over the pairs (default 1)")
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    train.add_argument("--batch-size", type=int, default=8, help="pairs per step (default 8)")
    train.add_argument("--max-steps", type=int, help="stop after N steps (overrides --epochs)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.set_defaults(func=cmd_train_projector)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from assistant.errors import AssistantError

    try:
        return int(args.func(args) or 0)
    except AssistantError as exc:
        print(f"error [{exc.code}]: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
