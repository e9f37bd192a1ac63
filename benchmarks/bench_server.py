"""What the benchmark's stand-in servers (echo_server.py, grpc_floor_server.py) share:
serve on an address given on the command line, announce the port, run on the event loop
asked for."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import grpc


async def serve(server: grpc.aio.Server, address: str, name: str) -> None:
    """Start ``server`` on ``address``, print "<name> listening on 127.0.0.1:<port>" (what
    pay_throughput.py waits for), serve until killed."""
    port = server.add_insecure_port(address)
    await server.start()
    print(f"{name} listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


def run(main: Callable[[str], Coroutine[Any, Any, None]]) -> None:
    """``script.py [HOST:PORT] [uvloop|asyncio]``"""
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0"
    if len(sys.argv) > 2 and sys.argv[2] == "uvloop":
        import uvloop

        uvloop.run(main(address))
    else:
        asyncio.run(main(address))
