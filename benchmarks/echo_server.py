"""A bare grpc.aio server with one unary echo method and nothing else: the ceiling any
gRPC service in Python reaches on this machine. Prints its port, serves until killed.

    python benchmarks/echo_server.py [HOST:PORT] [uvloop|asyncio]
"""

from __future__ import annotations

import asyncio
import sys

import grpc


async def main(address: str) -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(
                echo, request_deserializer=None, response_serializer=None
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    await server.start()
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0"
    if len(sys.argv) > 2 and sys.argv[2] == "uvloop":
        import uvloop

        uvloop.run(main(address))
    else:
        asyncio.run(main(address))
