"""A bare grpc.aio server with one unary echo method and nothing else: the ceiling any
gRPC service in Python reaches on this machine. Prints its port, serves until killed.

    python benchmarks/echo_server.py [HOST:PORT] [uvloop|asyncio]
"""

from __future__ import annotations

import bench_server
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
    await bench_server.serve(server, address, "echo")


if __name__ == "__main__":
    bench_server.run(main)
