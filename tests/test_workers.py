"""The listener several worker processes share: its connections must send without waiting (TCP_NODELAY)."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket

import pytest

from api.workers import listening_socket


def _nodelay_in_child(listener: socket.socket, answer: multiprocessing.connection.Connection) -> None:
    """What a spawned worker sees: the inherited listener's accepted connection, under asyncio."""

    async def serve_one() -> int:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Probe, sock=listener)
        answer.send("listening")
        try:
            return await asyncio.wait_for(accepted, 30)
        finally:
            server.close()

    answer.send(asyncio.run(serve_one()))


def test_a_worker_process_accepts_connections_with_nagle_off() -> None:
    listener = listening_socket("127.0.0.1", 0)
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    worker = multiprocessing.get_context("spawn").Process(target=_nodelay_in_child, args=(listener, theirs))
    worker.start()
    try:
        assert ours.poll(60) and ours.recv() == "listening"
        with socket.create_connection(listener.getsockname(), timeout=30):
            assert ours.poll(30)
            assert ours.recv() != 0, "TCP_NODELAY must be set on accepted connections"
    finally:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()
            worker.join()
        listener.close()


def test_a_port_in_use_is_a_clear_error() -> None:
    taken = listening_socket("127.0.0.1", 0)
    taken.listen()
    try:
        with pytest.raises(SystemExit, match="cannot listen on 127.0.0.1"):
            listening_socket("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
