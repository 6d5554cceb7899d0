"""dynod: Heroku's dyno platform on one Linux host, without Docker."""

__version__ = "0.1.0"
