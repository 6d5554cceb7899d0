"""A WSGI app that says which package manager installed its dependencies."""

import gunicorn


def app(environ, start_response):
    body = f"Hello from Poetry (gunicorn {gunicorn.__version__})\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
