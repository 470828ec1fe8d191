"""The one-command demo: a local cluster of chat nodes sharing one Redis.

``python -m crossws_sync demo`` runs :func:`crossws_sync.demo.launcher.main`, which finds (or
starts) a Redis server, starts N node processes (:mod:`crossws_sync.demo.node`) and stops all of
them on Ctrl-C. The chat page and its script live in ``crossws_sync/demo/static/``.
See ``docs/demo.md``.
"""
