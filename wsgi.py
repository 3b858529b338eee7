"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi run`, or `storyapp serve`.

Importing it starts the web process, as `storyapp serve` does: the database is created or
upgraded first."""

from storyapp import db
from storyapp.api import create_app
from storyapp.config import Settings
from storyapp.migrations import migrate

settings = Settings.from_env()
app = create_app(settings)
migrate(db.bind(settings.database_url))
