"""Glue only: a Flask front that calls the api over a pooled requests.Session (keep-alive).

Run under ``opentelemetry-instrument`` (Flask + requests instrumentation, default settings); this file
imports no OpenTelemetry API.
"""

import os

import requests
from flask import Flask

app = Flask(__name__)
session = requests.Session()
API = os.environ["REALLIFE_API_URL"]


@app.get("/health")
def health():
    return "ok"


@app.get("/order/<int:n>")
def order(n):
    r = session.get(f"{API}/item/{n}", timeout=30)
    return {"item": r.json(), "status": r.status_code}


if __name__ == "__main__":
    host, port = os.environ["REALLIFE_LISTEN"].rsplit(":", 1)
    app.run(host=host, port=int(port), threaded=True)
