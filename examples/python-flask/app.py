"""The example Python app: a Flask page that says which dyno served it."""

import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return f"Hello from {os.environ.get('DYNO', 'a dyno')} (Python + Flask on dynod)\n"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=int(os.environ.get("PORT", "5000")))
