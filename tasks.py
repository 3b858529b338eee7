"""Huey's entry point: `huey_consumer tasks.huey -k thread -w 8` (or `storyapp worker`).

Importing it starts a worker's process, as `storyapp worker` does: the database is created or
upgraded, and the heartbeat and recovery run beside the consumer."""

from storyapp import db
from storyapp.config import Settings
from storyapp.migrations import migrate
from storyapp.queue import huey
from storyapp.supervisor import supervise_consumer
from storyapp.tasks import configure

settings = Settings.from_env()
configure(settings)
migrate(db.bind(settings.database_url))
supervise_consumer()

__all__ = ["huey"]
