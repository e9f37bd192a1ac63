"""The card network + issuer simulator: ISO 8583 over TCP, its own process.

``spec`` (the message dialect), ``framing`` (2-byte length prefix), ``issuers`` (BIN
routing, test cards), ``store`` (SQLite state), ``switch`` (the rules), ``settlement``
(fees and the settlement file), ``server`` (asyncio TCP). Run it with
``scanpay cardnet serve``; docs/cards.md describes the protocol and the test cards.
"""
