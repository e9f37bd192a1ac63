"""The grpc.aio server: services, health checking and reflection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from protos.scanpay.v1 import merchant_pb2, wallet_pb2
from psp_server.api import mapping, relay
from psp_server.api.auth import ApiKeys
from psp_server.api.errors import tolerant_stream, tolerant_unary
from psp_server.api.servicers.merchant import MerchantServicer
from psp_server.api.servicers.wallet import WalletServicer
from psp_server.bootstrap import App

MERCHANT_SERVICE = merchant_pb2.DESCRIPTOR.services_by_name["MerchantService"]
WALLET_SERVICE = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"]
SERVICE_NAMES = (MERCHANT_SERVICE.full_name, WALLET_SERVICE.full_name)


# The calls a gateway answers itself, from the database: they only read, and a read there
# sees what the core committed (on SQLite a commit becomes visible to other connections
# once it is on disk). Every other call goes to the core.
GATEWAY_READS = frozenset(
    {
        "scanpay.v1.MerchantService.GetMerchant",
        "scanpay.v1.MerchantService.GetPayment",
        "scanpay.v1.MerchantService.ListPayments",
        "scanpay.v1.MerchantService.GetStaticQr",
        "scanpay.v1.MerchantService.GetDailySummary",
        "scanpay.v1.WalletService.GetBalance",
        "scanpay.v1.WalletService.ResolveQr",
        "scanpay.v1.WalletService.ListTransactions",
    }
)


def _serialize(response: Any) -> bytes:
    """A servicer may return the response already encoded (the bytes stored with an
    idempotency key, an event encoded once): those go out as they are."""
    if type(response) is bytes:
        return response
    data: bytes = response.SerializeToString()
    return data


def add_service(
    server: grpc.aio.Server,
    service: ServiceDescriptor,
    servicer: Any,
    forward: Callable[[MethodDescriptor], Any] | None = None,
) -> None:
    """Register every method of ``service`` on ``servicer`` (what the generated
    ``add_*Servicer_to_server`` does), with requests parsed by the handler itself, so a
    malformed body is INVALID_ARGUMENT, and responses that may be pre-encoded bytes.
    ``forward`` (a gateway): the handler of a unary method, taking the request's bytes
    as they came and answering with bytes; None where the servicer answers here."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        if method.client_streaming:
            raise ValueError(f"{method.full_name}: client streaming is not supported")
        if method.server_streaming:
            fn = getattr(servicer, method.name)
            decode = message_factory.GetMessageClass(method.input_type).FromString
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                tolerant_stream(fn, decode), response_serializer=_serialize
            )
        elif forward is not None and (fwd := forward(method)) is not None:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(fwd)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                unary_handler(servicer, method), response_serializer=_serialize
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def unary_handler(servicer: Any, method: MethodDescriptor) -> Any:
    decode = message_factory.GetMessageClass(method.input_type).FromString
    return tolerant_unary(getattr(servicer, method.name), decode)


def servicers(app: App) -> list[tuple[ServiceDescriptor, Any]]:
    return [
        (
            MERCHANT_SERVICE,
            MerchantServicer(app.merchants, ApiKeys(app.db), app.bus, app.cards),
        ),
        (WALLET_SERVICE, WalletServicer(app.wallets)),
    ]


def core_handlers(app: App) -> list[Any]:
    """The core's handler of each method its gateways forward (``relay.unary_methods``
    order)."""
    by_service = dict((s.full_name, obj) for s, obj in servicers(app))
    return [
        unary_handler(by_service[m.containing_service.full_name], m)
        for m in relay.unary_methods((MERCHANT_SERVICE, WALLET_SERVICE))
    ]


def build_server(
    app: App, address: str, core: relay.RelayClient | None = None
) -> tuple[grpc.aio.Server, int]:
    """Create (not start) the server bound to ``address``; returns it and the port.
    ``core``: this process is a gateway, its unary calls go to the core."""
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
    forward = None
    if core is not None:
        client = core
        index = {
            m.full_name: i
            for i, m in enumerate(relay.unary_methods((MERCHANT_SERVICE, WALLET_SERVICE)))
        }

        def forward(method: MethodDescriptor) -> Any:
            if method.full_name in GATEWAY_READS:
                return None
            return relay.forwarder(client, index[method.full_name])

    for service, servicer in servicers(app):
        add_service(server, service, servicer, forward)
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


async def start_core(app: App, path: str) -> relay.RelayCore:
    """This process as the core (``psp serve --gateways N``): serve the gateways' calls on
    the Unix socket ``path``, and send them every event this process commits."""
    from psp_server.service.events import Notice

    mapping.set_pay_url_base(app.settings.public_base_url)
    core = relay.RelayCore(core_handlers(app))
    loop = asyncio.get_running_loop()

    def tap(notice: Notice) -> None:
        # Encoded once here for every gateway; b"" (only the sequence number) makes their
        # streams read the event from the log.
        data = mapping.event_bytes(notice.event) if notice.event is not None else b""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            core.publish(notice.merchant_id, notice.seq, data)
        else:  # a job the writer thread ran
            loop.call_soon_threadsafe(core.publish, notice.merchant_id, notice.seq, data)

    await core.start(path)
    app.bus.tap(tap)
    return core


async def start_gateway(
    app: App, address: str, path: str
) -> tuple[grpc.aio.Server, int, relay.RelayClient]:
    """This process as a gateway of the core listening on ``path``: gRPC on ``address``,
    unary calls handed to the core, streams fed by its events. Started and serving."""
    from psp_server.service.events import Notice

    def on_event(merchant_id: str, seq: int, data: bytes) -> None:
        app.bus.publish(Notice(merchant_id, seq, data=data or None))

    client = relay.RelayClient(on_event)
    await client.connect(path)
    server, port = build_server(app, address, core=client)
    await server.start()
    await mark_serving(server)
    return server, port, client
