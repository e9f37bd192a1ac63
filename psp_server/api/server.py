"""The grpc.aio server: services, health checking and reflection."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.scanpay.v1 import merchant_pb2, wallet_pb2
from psp_server.api import mapping
from psp_server.api.auth import ApiKeys
from psp_server.api.errors import tolerant_stream, tolerant_unary
from psp_server.api.servicers.merchant import MerchantServicer
from psp_server.api.servicers.wallet import WalletServicer
from psp_server.bootstrap import App

MERCHANT_SERVICE = merchant_pb2.DESCRIPTOR.services_by_name["MerchantService"]
WALLET_SERVICE = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"]
SERVICE_NAMES = (MERCHANT_SERVICE.full_name, WALLET_SERVICE.full_name)


def _serialize(response: Any) -> bytes:
    """A servicer may return the response already encoded (the bytes stored with an
    idempotency key, an event encoded once): those go out as they are."""
    if type(response) is bytes:
        return response
    data: bytes = response.SerializeToString()
    return data


def add_service(server: grpc.aio.Server, service: ServiceDescriptor, servicer: Any) -> None:
    """Register every method of ``service`` on ``servicer`` (what the generated
    ``add_*Servicer_to_server`` does), with requests parsed by the handler itself, so a
    malformed body is INVALID_ARGUMENT, and responses that may be pre-encoded bytes."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        if method.client_streaming:
            raise ValueError(f"{method.full_name}: client streaming is not supported")
        fn = getattr(servicer, method.name)
        decode = message_factory.GetMessageClass(method.input_type).FromString
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                tolerant_stream(fn, decode), response_serializer=_serialize
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                tolerant_unary(fn, decode), response_serializer=_serialize
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def build_server(app: App, address: str) -> tuple[grpc.aio.Server, int]:
    """Create (not start) the server bound to ``address``; returns it and the port."""
    mapping.set_pay_url_base(app.settings.public_base_url)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 1 << 20),
            # Several server processes may serve one port (scanpay psp serve --workers N).
            ("grpc.so_reuseport", 1),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
    )
    add_service(
        server,
        MERCHANT_SERVICE,
        MerchantServicer(app.merchants, ApiKeys(app.db), app.bus, app.cards),
    )
    add_service(server, WALLET_SERVICE, WalletServicer(app.wallets))
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
