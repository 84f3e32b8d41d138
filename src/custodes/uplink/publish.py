"""JetStream publishing with the server's ack as a future, for the uplink.

nats-py's ``publish_async`` does the same, but on Python 3.11 its ``asyncio.wait_for`` around
its own semaphore makes a task per message, so the event loop turns over after every
message and each one leaves in a socket write of its own: half of an uplink's CPU when a
catch-up was profiled (and as many reads for nats-server). Here a pass's messages are
buffered and leave in a few writes. The number outstanding is the uplink's to bound (a pass
has at most ``uplink.batch``). Replies come to one wildcard subscription under the site's
own inbox prefix (a site may read only its own acks).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

NO_RESPONDERS = "503"


class AckedPublisher:
    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._next = 0
        self._futures: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._prefix}.*", cb=self._reply)

    async def publish(self, subject: str, payload: bytes,
                      headers: dict[str, str]) -> asyncio.Future[dict[str, Any]]:
        """Publish; the future holds the server's ack (a dict), or the server's refusal."""
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _f: self._futures.pop(token, None))
        self._futures[token] = future
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}",
                               headers=headers)
        return future

    async def _reply(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject.rsplit(".", 1)[-1])
        if future is None or future.done():
            return  # given up already (a cancelled wait): the message goes again
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            resp = json.loads(msg.data)
        except ValueError as exc:
            future.set_exception(exc)
            return
        if not isinstance(resp, dict):
            future.set_exception(ValueError(f"not a JetStream ack: {msg.data[:100]!r}"))
        elif "error" in resp:
            future.set_exception(nats.js.errors.APIError.from_error(resp["error"]))
        else:
            future.set_result(resp)
