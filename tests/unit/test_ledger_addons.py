"""Add-ons in the ledger, on both backends: every create, attach, detach and destroy is one
transaction with the release it makes; the release records the add-on set; bad input changes
nothing; the schema keeps a release's add-on set as immutable as the rest of it."""

# ruff: noqa: F811

from __future__ import annotations

import random

import pytest

from dynod.errors import Conflict, NotFound, UserError
from dynod.ledger import Ledger
from dynod.ledger.rules import attachment_vars, check_attachment_name
from dynod.model import Addon, AddonRef
from tests.ledger_backends import Backend, FakeClock, backend, ledger, pg_server  # noqa: F401 - fixtures

PG_URL = "postgres://u_abc:secret@198.18.0.1:40001/d_abc"


def addon(name: str = "postgresql-curved-12345", app: str = "shop", *, service: str = "heroku-postgresql",
          plan: str = "essential-0", url: str = PG_URL) -> Addon:
    return Addon(id=f"id-{name}", name=name, app=app, service=service, plan=plan, config={"URL": url},
                 provider_data={"port": 40001}, created_at=5.0)


def deployed(ledger: Ledger, app: str = "shop") -> None:
    ledger.create_app(app)
    ledger.create_release(app, slug_id="a" * 64, config={"SECRET": "x"}, process_types={"web": "serve"},
                          description="Deploy")


def snapshot(backend: Backend, ledger: Ledger) -> tuple[int, ...]:
    return tuple(backend.count(ledger, t) for t in ("addons", "addon_attachments", "releases"))


def test_attachment_vars_prefix_each_var() -> None:
    assert attachment_vars("DATABASE", {"URL": "u"}) == {"DATABASE_URL": "u"}
    assert attachment_vars("HEROKU_POSTGRESQL_RED", {"URL": "u", "PASSWORD": "p"}) == {
        "HEROKU_POSTGRESQL_RED_URL": "u", "HEROKU_POSTGRESQL_RED_PASSWORD": "p"}


@pytest.mark.parametrize("name", ["database", "1DB", "DB-1", "", "D" * 64, "DB URL"])
def test_bad_attachment_names_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="Invalid attachment name"):
        check_attachment_name(name)


def test_create_records_the_addon_attaches_it_and_releases_with_its_var(ledger: Ledger) -> None:
    deployed(ledger)
    release = ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    assert release.version == 2 and release.description == "Attach DATABASE (postgresql-curved-12345)"
    assert release.config == {"SECRET": "x", "DATABASE_URL": PG_URL}
    assert release.slug_id == "a" * 64 and release.process_types == {"web": "serve"}
    assert release.addons == (AddonRef("postgresql-curved-12345", "DATABASE", "heroku-postgresql", "essential-0"),)
    assert ledger.current_release("shop") == release
    assert ledger.get_addon("postgresql-curved-12345") == addon()
    [att] = ledger.list_attachments(app="shop")
    assert (att.id, att.addon, att.app, att.name) == ("att-1", "postgresql-curved-12345", "shop", "DATABASE")
    # Every later release records the set too, a deploy included.
    later = ledger.create_release("shop", slug_id="b" * 64, config=release.config, process_types={},
                                  description="Deploy")
    assert later.addons == release.addons
    assert ledger.get_release("shop", 1).addons == ()


def test_attach_to_another_app_and_detach(ledger: Ledger) -> None:
    deployed(ledger)
    deployed(ledger, "admin")
    ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    attached = ledger.attach_addon("postgresql-curved-12345", "admin", "SHOP_DB", attachment_id="att-2")
    assert attached.app == "admin" and attached.config["SHOP_DB_URL"] == PG_URL
    assert [a.name for a in ledger.list_addons("admin")] == ["postgresql-curved-12345"]
    assert [(a.app, a.name) for a in ledger.list_attachments(addon="postgresql-curved-12345")] == [
        ("admin", "SHOP_DB"), ("shop", "DATABASE")]
    detached = ledger.detach_addon("admin", "SHOP_DB")
    assert "SHOP_DB_URL" not in detached.config and detached.addons == ()
    assert detached.description == "Detach SHOP_DB (postgresql-curved-12345)"
    assert ledger.list_addons("admin") == []


def test_bad_input_changes_nothing(backend: Backend, ledger: Ledger) -> None:
    deployed(ledger)
    deployed(ledger, "admin")
    ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    before = snapshot(backend, ledger)
    with pytest.raises(Conflict, match="already taken"):
        ledger.create_addon(addon(), attachment="OTHER", attachment_id="att-9")
    with pytest.raises(Conflict, match="already has an attachment named DATABASE"):
        ledger.attach_addon("postgresql-curved-12345", "shop", "DATABASE", attachment_id="att-9")
    assert snapshot(backend, ledger) == before
    ledger.create_release("admin", slug_id=None, config={"SECRET": "x", "MINE_URL": "keep"}, process_types={},
                          description="Set MINE_URL")
    before = snapshot(backend, ledger)
    with pytest.raises(Conflict, match="admin already has the config var MINE_URL"):
        ledger.attach_addon("postgresql-curved-12345", "admin", "MINE", attachment_id="att-9")
    with pytest.raises(UserError, match="Invalid attachment name"):
        ledger.attach_addon("postgresql-curved-12345", "admin", "bad-name", attachment_id="att-9")
    with pytest.raises(UserError, match="Invalid add-on name"):
        ledger.create_addon(addon("Redis One"), attachment="REDIS", attachment_id="att-9")
    with pytest.raises(NotFound, match="Couldn't find that app: ghost"):
        ledger.attach_addon("postgresql-curved-12345", "ghost", "DB", attachment_id="att-9")
    with pytest.raises(NotFound, match="Couldn't find that add-on: nope"):
        ledger.attach_addon("nope", "admin", "DB", attachment_id="att-9")
    with pytest.raises(NotFound, match="Couldn't find that attachment"):
        ledger.detach_addon("admin", "DATABASE")
    assert snapshot(backend, ledger) == before
    assert ledger.current_release("admin").config == {"SECRET": "x", "MINE_URL": "keep"}


def test_destroy_is_refused_while_another_app_holds_it_unless_forced(backend: Backend, ledger: Ledger) -> None:
    deployed(ledger)
    deployed(ledger, "admin")
    ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    ledger.attach_addon("postgresql-curved-12345", "admin", "SHOP_DB", attachment_id="att-2")
    before = snapshot(backend, ledger)
    with pytest.raises(Conflict, match="still attached to admin"):
        ledger.destroy_addon("postgresql-curved-12345")
    assert snapshot(backend, ledger) == before
    releases = ledger.destroy_addon("postgresql-curved-12345", force=True)
    assert sorted((r.app, r.description) for r in releases) == [
        ("admin", "Detach SHOP_DB (postgresql-curved-12345)"), ("shop", "Detach DATABASE (postgresql-curved-12345)")]
    assert "DATABASE_URL" not in ledger.current_release("shop").config
    assert "SHOP_DB_URL" not in ledger.current_release("admin").config
    assert backend.count(ledger, "addons") == backend.count(ledger, "addon_attachments") == 0
    with pytest.raises(NotFound):
        ledger.get_addon("postgresql-curved-12345")


def test_destroy_of_an_addon_only_its_owner_holds_needs_no_force(ledger: Ledger) -> None:
    deployed(ledger)
    ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    [release] = ledger.destroy_addon("postgresql-curved-12345")
    assert release.addons == () and release.config == {"SECRET": "x"}


def test_update_gives_every_attached_app_a_release_with_the_new_values(ledger: Ledger) -> None:
    deployed(ledger)
    deployed(ledger, "admin")
    ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    ledger.attach_addon("postgresql-curved-12345", "admin", "SHOP_DB", attachment_id="att-2")
    new_url = PG_URL.replace("secret", "rotated")
    releases = ledger.update_addon("postgresql-curved-12345", config={"URL": new_url},
                                   provider_data={"port": 40001, "generation": 2}, description="Rotate credentials")
    assert sorted((r.app, r.description) for r in releases) == [
        ("admin", "Rotate credentials"), ("shop", "Rotate credentials")]
    assert ledger.current_release("shop").config["DATABASE_URL"] == new_url
    assert ledger.current_release("admin").config["SHOP_DB_URL"] == new_url
    assert ledger.get_addon("postgresql-curved-12345").provider_data == {"port": 40001, "generation": 2}
    assert ledger.update_addon("postgresql-curved-12345", provider_data={"port": 40001}) == []


def test_destroying_the_owner_app_removes_its_addons_and_their_attachments(backend: Backend, ledger: Ledger) -> None:
    deployed(ledger)
    ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    ledger.destroy_app("shop")
    assert backend.count(ledger, "addons") == backend.count(ledger, "addon_attachments") == 0


def test_raw_sql_cannot_rewrite_a_releases_addon_set(backend: Backend, ledger: Ledger) -> None:
    deployed(ledger)
    ledger.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
    with pytest.raises(backend.db_error):
        backend.sql(ledger, "UPDATE releases SET addons = '[]' WHERE version = 2")
    with pytest.raises(backend.db_error):
        backend.sql(ledger, "UPDATE releases SET addons = '{}' WHERE version = 2")
    assert len(ledger.get_release("shop", 2).addons) == 1


def test_a_v4_ledger_gains_addons_in_place(backend: Backend) -> None:
    backend.build_old_schema(4)
    led = backend.open(clock=FakeClock(), rng=random.Random(1))
    try:
        assert led.list_addons() == []
        led.create_release("shop", slug_id=None, config={}, process_types={}, description="Initial release")
        release = led.create_addon(addon(), attachment="DATABASE", attachment_id="att-1")
        assert release.addons[0].attachment == "DATABASE"
        assert led.get_release("shop", 1).addons == ()
        with pytest.raises(backend.db_error):  # the remade trigger guards the new column too
            backend.sql(led, "UPDATE releases SET addons = '[]' WHERE version = 2")
    finally:
        led.close()
