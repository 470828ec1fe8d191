"""crossws_sync under gunicorn (W9): ``-w N`` GeventWebSocketWorker workers, each a cluster node.

    python bench/servers/crossws_gunicorn.py --workers N --port P --redis-port R

Replaces itself (``exec``) with ``gunicorn -k crossws_sync.server.gunicorn.GeventWebSocketWorker
-w N --no-control-socket``, serving :mod:`crossws_gunicorn_app`, so the process the runner
started is gunicorn's master and the workers are its children. Every worker joins the cluster on
the one Redis as node ``w<pid>``: a broadcast made on one worker reaches the clients of the
others through Redis, as across machines.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser(description="crossws_sync under gunicorn (bench)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--auth", action="store_true")
    args, _ = parser.parse_known_args()
    os.environ["CROSSWS_BENCH_REDIS_PORT"] = str(args.redis_port)
    if args.auth:
        os.environ["CROSSWS_BENCH_AUTH"] = "1"
    argv = [sys.executable, "-m", "gunicorn", "-k", "crossws_sync.server.gunicorn.GeventWebSocketWorker",
            "-w", str(args.workers), "-b", "%s:%d" % (args.host, args.port), "--no-control-socket",
            "--worker-connections", "20000", "--graceful-timeout", "5", "--log-level", "warning",
            "--pythonpath", HERE, "crossws_gunicorn_app:app"]
    os.execv(sys.executable, argv)


if __name__ == "__main__":
    main()
