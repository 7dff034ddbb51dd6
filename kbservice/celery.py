from __future__ import annotations

import os
from collections.abc import Iterable
from typing import cast

from celery import Celery
from kombu.exceptions import ChannelError
from kombu.transport.virtual import Channel as VirtualChannel

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kbservice.settings")

app = Celery("kbservice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def celery_queue_lengths(queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue (not those already reserved by a worker), as the broker counts
    them: kombu knows the transport's own key layout (priority sub-queues, key prefixes). Raises
    kombu's OperationalError when the broker is unreachable."""
    lengths: dict[str, int] = {}
    with app.connection_or_acquire() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
        channel = cast(VirtualChannel, connection.default_channel)  # the broker is Redis, a virtual transport
        for queue in queues:
            try:
                lengths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # the broker holds no such queue: nothing is waiting in it
                lengths[queue] = 0
    return lengths
