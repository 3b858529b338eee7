"""Huey's entry point: `huey_consumer tasks.huey -k thread -w 8` (or `storyapp worker`)."""

from storyapp.config import Settings
from storyapp.queue import huey
from storyapp.supervisor import supervise_consumer
from storyapp.tasks import configure

configure(Settings.from_env())
# What `storyapp worker` runs beside the consumer: the heartbeat, and recovery of lost work.
supervise_consumer()

__all__ = ["huey"]
