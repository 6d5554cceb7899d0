"""An app's own uid: the id maps and spec fields (pure), and the settings that bound the range."""

from __future__ import annotations

import pytest

from dynod.errors import UserError
from dynod.linux.idmap import app_id_map, app_identity, idmap_key, map_text
from dynod.settings import DynoSettings, Settings, validate


def test_the_stack_user_is_shown_as_the_app_user_and_root_stays_root() -> None:
    maps = app_id_map(61000, 61000, 2_000_000_007, 2_000_000_007)
    assert map_text(maps["uid"]) == "0 0 1\n61000 2000000007 1\n"
    assert maps["gid"] == maps["uid"]


def test_app_identity_gives_uid_gid_and_maps() -> None:
    fields = app_identity(Settings(), 2_000_000_003)
    assert fields["uid"] == fields["gid"] == 2_000_000_003
    assert fields["idmap"]["uid"][1] == [61000, 2_000_000_003, 1]


def test_one_namespace_per_distinct_map() -> None:
    assert idmap_key(app_id_map(61000, 61000, 5, 5)) == idmap_key(app_id_map(61000, 61000, 5, 5))
    assert idmap_key(app_id_map(61000, 61000, 5, 5)) != idmap_key(app_id_map(61000, 61000, 6, 6))


def test_the_app_range_must_leave_out_the_stack_user_and_fit_in_32_bits() -> None:
    with pytest.raises(UserError, match="outside uid_first"):
        validate(Settings(dynos=DynoSettings(uid_first=60000, uid_count=2000)))
    with pytest.raises(UserError, match="range of uids"):
        validate(Settings(dynos=DynoSettings(uid_first=4_294_967_000, uid_count=65536)))
    with pytest.raises(UserError, match="range of uids"):
        validate(Settings(dynos=DynoSettings(uid_count=0)))
    assert validate(Settings()).dynos.uid_first == 2_000_000_000
