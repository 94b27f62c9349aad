"""``llamacy rpc-server``: serve this machine's devices to other llamacy servers over ggml RPC.

ggml's RPC protocol has no authentication and no encryption: anyone who can reach the port
can run computations on the device and read or overwrite its memory. The server binds to
127.0.0.1 by default; binding anywhere else logs a loud warning (use a private network, a
firewall, or an SSH tunnel).
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys

log = logging.getLogger("llamacy.rpc")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llamacy rpc-server",
        description="Serve this machine's GPUs (or its CPU) to `llamacy --rpc host:port` over ggml RPC.")
    p.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("-p", "--port", type=int, default=50052, help="port to listen on (default: 50052)")
    p.add_argument("-c", "--cache", metavar="DIR",
                   help="cache received weights in DIR, so a restarted client loads them from local disk")
    p.add_argument("-t", "--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="threads for the CPU device (default: half the cores)")
    p.add_argument("--mem", type=int, metavar="MB",
                   help="not supported by the pinned engine: its RPC servers report the device's own memory")
    p.add_argument("-v", "--verbose", action="store_true", help="log the engine's info messages")
    return p


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.mem is not None:
        p.error("--mem is not supported: the pinned engine's RPC protocol (v7) reports each device's own "
                "memory and has no override; weight the split on the client with -ts instead")
    if not 0 < a.port < 65536:
        p.error("--port must be in 1..65535")
    if a.threads < 1:
        p.error("--threads must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not is_loopback(a.host):
        log.warning("!" * 72)
        log.warning("RPC server bound to %s, not loopback. ggml RPC has NO authentication and NO encryption:", a.host)
        log.warning("anyone who can reach %s:%d can run code on this device and read its memory.", a.host, a.port)
        log.warning("Expose it only on a trusted private network, behind a firewall, or through an SSH tunnel.")
        log.warning("!" * 72)
    if a.cache:
        try:
            os.makedirs(a.cache, mode=0o700, exist_ok=True)
        except OSError as exc:
            p.error(f"cannot create --cache directory {a.cache}: {exc}")
    from llamacy.engine import backends
    from llamacy.engine.model import init_backend
    init_backend(verbose=a.verbose)
    info = backends.report()
    served = [d for d in info["devices"] if d["type"] in ("gpu", "igpu")] or \
             [d for d in info["devices"] if d["type"] == "cpu"]
    log.info("engine: CPU variant %s; serving %s on %s:%d (cache: %s)", info["cpu_variant"],
             ", ".join(f"{d['name']} ({d['description']}, {d['memory_mib']} MiB)" for d in served),
             a.host, a.port, a.cache or "off")
    # The server runs inside the engine until the process is stopped: default signal actions,
    # so SIGINT/SIGTERM end it at once (it holds nothing that needs flushing).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.stdout.flush()
    backends.serve_rpc(a.host, a.port, cache_dir=a.cache, n_threads=a.threads)
    log.error("RPC server could not start on %s:%d (port in use or address not available?)", a.host, a.port)
    return 1
