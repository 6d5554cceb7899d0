"""Which of an app's web dynos the router may send requests to, and what it says when none: pure.

Heroku's router holds a request while an app's web dynos boot (H20 after 75 s), answers H10 when
they crashed and H14 only when the app runs no web dynos at all. A restart of any kind replaces
dynos, and for a moment the app may have none that is up (the old ones out of the routes, the
new ones still being made, not even ``starting`` yet). In that moment the formation still asks for
web dynos, so the answer is "booting": the router holds the request until a replacement is up,
never H14.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ..model import DynoRecord, DynoState


@dataclass(frozen=True, slots=True)
class WebRoutes:
    dynos: tuple[DynoRecord, ...]  # the routable ones: up, not stopping, not ejected by a health check
    booting: bool  # none routable, but some are on their way: hold requests (H20)
    crashed: bool  # none routable, none on the way, and the last ones crashed (H10)


def web_routes(web: Iterable[DynoRecord], *, wanted: int, leaving: Collection[str] = (),
               crashed: Iterable[DynoRecord] = ()) -> WebRoutes:
    """``web``: the app's live web dynos; ``wanted``: how many its formation asks for (0 when the
    current release has no web type); ``leaving``: ids of dynos that must get no new request (on
    their way down, or ejected by the health check); ``crashed``: its crashed web records."""
    live = list(web)
    routable = tuple(d for d in live if d.state == DynoState.UP and d.id not in leaving)
    if routable:
        return WebRoutes(routable, booting=False, crashed=False)
    has_crashed = any(True for _ in crashed)
    starting = any(d.state == DynoState.STARTING and d.id not in leaving for d in live)
    # Wanted and not crashed: a replacement is on its way (or about to be made): hold.
    booting = starting or (wanted > 0 and not has_crashed)
    return WebRoutes((), booting=booting, crashed=has_crashed and not booting)
