"""An echo server on crossws_sync's public API, for Autobahn|Testsuite (tests/test_autobahn.py).

Every data message goes back as it came: text as text, binary as binary. The heartbeat text is
set to something no case sends, since an empty message is the original's default heartbeat.
With a second argument ``deflate``, permessage-deflate is on and every message is compressed."""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402

adapter = WebSocketCrossServerAdapter(ws_options={"host": "127.0.0.1", "port": int(sys.argv[1])},
                                      max_message_size=20 << 20, max_outbox_bytes=64 << 20,
                                      heartbeat_str="\x00crossws-heartbeat",
                                      per_message_deflate={"threshold": 0} if "deflate" in sys.argv[2:] else False)
adapter.on_websocket_event("message", lambda socket, data: socket.send(data))
adapter.serve_forever()
