"""Glue only: a Flask api that reads PostgreSQL through a psycopg2 connection pool.

Run under ``opentelemetry-instrument`` (Flask + psycopg2 instrumentation, default settings); this file
imports no OpenTelemetry API.
"""

import os

from flask import Flask
from psycopg2.pool import ThreadedConnectionPool

app = Flask(__name__)
pool = ThreadedConnectionPool(1, 8, os.environ["REALLIFE_DSN"])


@app.get("/health")
def health():
    return "ok"


@app.get("/item/<int:n>")
def item(n):
    conn = pool.getconn()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name, price FROM items WHERE id = %s", ((n % 100) + 1,))
            row = cur.fetchone()
        conn.commit()
    finally:
        pool.putconn(conn)
    return {"id": row[0], "name": row[1], "price": float(row[2])}


if __name__ == "__main__":
    host, port = os.environ["REALLIFE_LISTEN"].rsplit(":", 1)
    app.run(host=host, port=int(port), threaded=True)
