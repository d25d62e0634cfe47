"""python -m tracker.client sync [DIR] [--url URL] [--token TOKEN]: replay a spool directory.

Exit status: 0 when everything was delivered, 1 when something stays in the
spool (server unreachable, a file in use), 2 when the server refused entries.
"""

import argparse
import sys

from tracker.client import sync
from tracker.client.sender import default_spool_dir
from tracker.client.transport import RequestFailed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tracker.client", description="Torchlight client tools")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("sync", help="replay spooled requests to the server")
    cmd.add_argument("directory", nargs="?", default=None, help=f"spool directory (default {default_spool_dir()})")
    cmd.add_argument("--url", default=None, help="server URL (default: TORCHLIGHT_URL)")
    cmd.add_argument("--token", default=None, help="API token (default: TORCHLIGHT_TOKEN)")
    args = parser.parse_args(argv)
    directory = args.directory or default_spool_dir()
    try:
        sent, refused, left = sync(directory, url=args.url, token=args.token)
    except (ValueError, RequestFailed) as exc:
        print(f"sync failed: {exc}", file=sys.stderr)
        return 2
    print(f"synced {sent} requests from {directory}; {refused} refused; {left} files left")
    if left:
        return 1
    return 2 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
