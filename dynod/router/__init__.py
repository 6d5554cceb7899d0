"""The HTTP router: Heroku's routing layer as its own processes, fed routes by dynod.

dynod uses ``RouterControl``; the router itself runs as ``python -m dynod.router`` (see docs/router.md).
"""

from .control import RouterControl

__all__ = ["RouterControl"]
