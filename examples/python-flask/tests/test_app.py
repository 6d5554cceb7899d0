from app import app


def test_index_names_the_dyno():
    assert b"Hello from" in app.test_client().get("/").data
