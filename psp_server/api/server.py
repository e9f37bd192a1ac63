"""The grpc.aio server: services, health checking and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.scanpay.v1 import merchant_pb2, merchant_pb2_grpc, wallet_pb2, wallet_pb2_grpc
from psp_server.api import mapping
from psp_server.api.auth import ApiKeys
from psp_server.api.errors import RejectMalformed
from psp_server.api.servicers.merchant import MerchantServicer
from psp_server.api.servicers.wallet import WalletServicer
from psp_server.bootstrap import App

SERVICE_NAMES = (
    merchant_pb2.DESCRIPTOR.services_by_name["MerchantService"].full_name,
    wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
)


def build_server(app: App, address: str) -> tuple[grpc.aio.Server, int]:
    """Create (not start) the server bound to ``address``; returns it and the port."""
    mapping.set_pay_url_base(app.settings.public_base_url)
    server = grpc.aio.server(
        interceptors=[RejectMalformed()],
        options=[
            ("grpc.max_receive_message_length", 1 << 20),
            # Several server processes may serve one port (scanpay psp serve --workers N).
            ("grpc.so_reuseport", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    merchant_pb2_grpc.add_MerchantServiceServicer_to_server(
        MerchantServicer(app.merchants, ApiKeys(app.db), app.bus, app.cards), server
    )
    wallet_pb2_grpc.add_WalletServiceServicer_to_server(WalletServicer(app.wallets), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server._scanpay_health = health_servicer  # type: ignore[attr-defined]
    return server, port


async def mark_serving(server: grpc.aio.Server) -> None:
    h: health.aio.HealthServicer = server._scanpay_health  # type: ignore[attr-defined]
    for name in ("", *SERVICE_NAMES):
        await h.set(name, health_pb2.HealthCheckResponse.SERVING)
