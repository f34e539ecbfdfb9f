"""A lean HTTP/1.1 keep-alive client, so that a benchmark measures the server rather than its client.

httpx spends about 2 ms of CPU per request in this machine's Python; 32 connections of it saturate a
core at ~400 requests/s, so a hello world measured with it is a measure of httpx. This client writes
a prepared request on a raw asyncio stream and reads back the status line, the headers and a
``Content-Length`` or chunked body: with it the same hello world answers ~4,000 requests/s. It speaks
only what the benchmarks need (one request at a time per connection, no TLS, no redirects).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: What a lost connection looks like here; a benchmark counts it and opens another.
TRANSPORT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Connection:
    """One keep-alive connection to ``base_url`` (``http://host:port``), reopened when the server closes it."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://host:port, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        try:
            self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            response = await self._read_response(self._reader)
        except BaseException:
            await self.close()  # mid-response: the stream cannot be reused
            raise
        if response.headers.get("connection", "").lower() == "close":
            await self.close()
        return response

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader) -> Response:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")  # the empty trailer
            return Response(status, headers, b"".join(chunks))
        return Response(status, headers, await reader.readexactly(int(headers.get("content-length", "0"))))

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
