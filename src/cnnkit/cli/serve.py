"""``cnnkit serve``: a local web app over a runs folder (runs, live curves, reports, predict, the glass box)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError

#: Host names that only this machine reaches (with any loopback address: 127.x.y.z, ::1); listening on one,
#: the app also refuses other Host headers (DNS rebinding).
LOOPBACK = ("127.0.0.1", "localhost")


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` reaches only this machine: ``localhost`` or a loopback address."""
    if host.lower() in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve anywhere
        return False


def allowed_hosts(host: str) -> list[str] | None:
    """The Host header names the app accepts when listening on ``host``: for a loopback address, that
    address (bracketed if IPv6, as a Host header writes it) plus localhost and 127.0.0.1; None (any) for
    an address other machines reach."""
    if not is_loopback(host):
        return None
    bare = host.strip("[]").lower()
    own = f"[{bare}]" if ":" in bare else bare
    return list(dict.fromkeys([own, *LOOPBACK]))


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="a local web app: runs, live curves, predict, the glass box",
                              formatter_class=Formatter,
                              description="Serve a runs folder in the browser: every run with its status and final "
                                          "metrics, a run's curves (redrawn while it trains), its report, predict "
                                          "from an uploaded image or a typed text, and the course's convolution "
                                          "and pooling examples stepped window by window. Needs the serve extra: "
                                          "pip install 'cnnkit[serve]'.",
                              epilog="examples:\n"
                                     "  cnnkit serve                      # runs/ at http://127.0.0.1:8000/\n"
                                     "  cnnkit serve my_runs --port 8080\n"
                                     "  cnnkit serve runs --host 0.0.0.0    # reachable from other machines")
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                   help="the folder holding the run folders (default: runs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="the port to listen on (1-65535, default 8000)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import importlib
    import socket
    import threading
    from pathlib import Path

    if not 1 <= args.port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    root = Path(args.runs_dir)
    if not root.is_dir():
        raise UserError(f"runs folder {args.runs_dir!r} does not exist" if not root.exists() else
                        f"{args.runs_dir!r} is a file; give the folder that holds the run folders")
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (FastAPI's upload parser)
        import uvicorn
    except ImportError as e:
        raise UserError(f"cnnkit serve needs FastAPI, uvicorn and python-multipart ({e}); install them with: "
                        f"pip install 'cnnkit[serve]'") from None
    from cnnkit.tools.serve import create_app

    app = create_app(root, allowed_hosts=allowed_hosts(args.host))
    try:
        family, kind, _, _, address = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise UserError(f"--host {args.host!r} is not an address to listen on ({e.strerror})") from None
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {args.host}:{args.port}: {e.strerror} (another server on that port? "
                        f"choose another with --port)") from None
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {str(root)!r} at http://{shown}:{args.port}/  (Ctrl+C stops)", flush=True)
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: whoever reaches this machine sees the runs and can use their "
              f"models", file=sys.stderr)
    # torch and the models take seconds to import: start now, so that the first prediction does not wait
    threading.Thread(target=importlib.import_module, args=("cnnkit.inference",), daemon=True).start()
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0
