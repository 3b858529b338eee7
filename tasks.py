"""Huey's entry point: `huey_consumer tasks.huey -k thread -w 8` (or `storyapp worker`)."""

from storyapp.config import Settings
from storyapp.tasks import configure, huey

configure(Settings.from_env())

__all__ = ["huey"]
