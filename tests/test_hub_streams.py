"""The hub's JetStream layout: health on a stream of its own that keeps only each site's last
report (the durable stream keeps 14 days), and one ack per batch from the hub's consumers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path
from typing import Any

import nats

from custodes.hub.nats_server import HUB_USER
from custodes.hub.service import CONSUMER, HEALTH_CONSUMER, HEALTH_STREAM, Hub
from custodes.uplink.wire import STREAM_NAME, Stream, subject
from hub_env import hub_audit, new_site, running_hub, site_audit, tls_of, wait_for


def _streams(hub: Hub) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        assert hub.nats is not None
        nc = await nats.connect(hub.nats_urls, user=HUB_USER, password=hub.nats.hub_password,
                                **tls_of(hub))
        try:
            js = nc.jetstream()
            out: dict[str, Any] = {}
            for name in (STREAM_NAME, HEALTH_STREAM):
                out[name] = await js.stream_info(name, subjects_filter=">")
            out["consumers"] = {
                c: await js.consumer_info(s, c)
                for s, c in ((STREAM_NAME, CONSUMER), (HEALTH_STREAM, HEALTH_CONSUMER))}
            return out
        finally:
            with contextlib.suppress(Exception):
                await nc.close()

    return asyncio.run(go())


def test_health_keeps_only_each_site_s_last_report(tmp_path: Path) -> None:
    with running_hub() as hub:
        root = hub.settings.data.parent
        site, _ = new_site(hub, root, "streams-school")  # a report a second
        try:
            site.activity(random.Random(5))
            wait_for("delivery", lambda: hub_audit(hub, site.name) == site_audit(site))
            time.sleep(3)  # a few more health reports
            info = _streams(hub)
            health, fleet = info[HEALTH_STREAM], info[STREAM_NAME]
            assert health.config.max_msgs_per_subject == 1
            assert health.config.max_age is not None
            assert health.config.max_age <= 3600
            # one report held, under the site's health subject; none in the durable stream
            assert health.state.subjects == {subject(site.name, Stream.HEALTH): 1}
            assert subject(site.name, Stream.HEALTH) not in (fleet.state.subjects or {})
            assert subject(site.name, Stream.AUDIT) in fleet.state.subjects
            assert fleet.config.max_age == 14 * 86400
            for consumer in info["consumers"].values():
                # each message acked once written: an ack of all before it would also ack
                # messages of a fetch whose answer was lost (hub/service.py)
                assert str(consumer.config.ack_policy) in {"explicit", "AckPolicy.EXPLICIT"}
        finally:
            site.close()
