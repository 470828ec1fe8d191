"""Wire formats and protocols, sans I/O (no gevent, no sockets, no Redis): WebSocket framing, the
protocol of both roles and its opening handshake, permessage-deflate, the original's JSON event
frames, the Redis envelopes and their signatures, the upgrade request and the client's URL."""
