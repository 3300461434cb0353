"""WSGI entry point for gunicorn: `gunicorn --config gunicorn.conf.py wsgi:app`."""

from image2model import create_app

app = create_app()
