"""Command line of the package: ``python -m crossws_sync demo [--port 8000] [--nodes 3] [--redis URL]``."""
from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """usage: python -m crossws_sync <command> [options]

commands:
  demo    start a local cluster of chat nodes sharing one Redis and serve the chat page
          (python -m crossws_sync demo --help for its options)
"""


def main(argv: Optional[List[str]] = None) -> int:
    """Dispatch to a sub-command.

    Args:
        argv: the arguments after ``python -m crossws_sync`` (``sys.argv[1:]``).

    Returns:
        the process exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from .demo.launcher import main as demo_main

        return demo_main(rest)
    sys.stderr.write("unknown command %r\n\n%s" % (command, USAGE))
    return 2


if __name__ == "__main__":
    sys.exit(main())
