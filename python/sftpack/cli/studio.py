"""sftpack studio [ROOT] [--host H] [--port P]: the local web app (pip install 'sftpack[studio]')."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError

HELP = "a local web app over a folder: data with trained tokens, packs, live runs, chat, launch jobs"


def register(sub: Any) -> None:
    parser = sub.add_parser("studio", help=HELP, description=HELP + ". Binds 127.0.0.1 unless --host says "
                            "otherwise; beyond loopback every request needs the access token printed at start.")
    parser.add_argument("root", nargs="?", type=Path, default=Path("."),
                        help="the working folder it shows and launches jobs in (default: here)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--token", help="the access token to require (default: a random one, beyond loopback)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        raise ConfigError(f"{args.root} is not a folder")
    try:
        import waitress  # noqa: F401, PLC0415

        from ..studio import serve  # noqa: PLC0415
    except ImportError as error:
        raise ConfigError(f"sftpack studio needs {error.name or 'Flask and waitress'}, which is not installed\n"
                          "hint: pip install 'sftpack[studio]'") from error
    serve(args.root, args.host, args.port, args.token)
    return 0
