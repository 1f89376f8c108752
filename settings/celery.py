"""The Celery configuration derived from :class:`settings.Settings`."""

from __future__ import annotations

from typing import Any

from settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Reliability-first Celery settings (see DESIGN.md, "Rules that make it reliable")."""
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "result_extended": True,
        "result_expires": 7 * 24 * 3600,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "broker_connection_retry_on_startup": True,
        # Recovery of a dead node is the dispatcher's job, not the broker's: a long
        # visibility timeout keeps Redis from re-delivering a long shard twice.
        "broker_transport_options": {"visibility_timeout": 12 * 3600},
        "task_default_queue": "dmg.default",
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
