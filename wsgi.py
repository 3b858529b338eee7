"""The WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi run`, or `storyapp serve`."""

from storyapp.api import create_app

app = create_app()
