"""The WebSocket server: one connection's driver, the service (upgrade, auth, dispatch, liveness),
the WSGI handler and middleware, the gunicorn worker, the browser client's files."""
