"""The dyno bridge keeps one MAC address while dynos come and go (a moving MAC stalls replies: H12s)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dynod.linux.net import bridge_mac

from .conftest import Dynod, write_app
from .test_dynos import deploy, fetch

pytestmark = pytest.mark.integration


def _mac(bridge: str) -> str:
    out = subprocess.run(["ip", "-j", "link", "show", "dev", bridge], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]["address"]


def test_bridge_mac_stays_put_when_dynos_leave(dynod: Dynod, app: str, tmp_path: Path) -> None:
    deploy(dynod, app, write_app(tmp_path / "src", "web: python3 web.py\n"))
    dynod.ctl("ps:scale", "web=3", "-a", app)
    dynod.up(app, 3)
    before = _mac(dynod.bridge)
    assert before == bridge_mac(dynod.bridge)
    dynod.ctl("ps:scale", "web=1", "-a", app)
    dynod.wait_for(lambda: [d["name"] for d in dynod.dynos(app)] == ["web.1"], what="scale down to web.1")
    assert _mac(dynod.bridge) == before
    assert fetch(dynod, app)  # the dyno that stayed still answers through the router
