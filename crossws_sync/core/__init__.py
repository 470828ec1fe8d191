"""Pure building blocks (no gevent, no sockets, no Redis): rooms, listeners, the reconnect
backoff, the cluster directory and the name policy."""
