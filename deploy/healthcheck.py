"""A container's healthcheck: ``python -m deploy.healthcheck PORT [PATH]`` exits 0 on a 2xx.

The Tollgate image has no curl; this asks the service's own port on the container's loopback.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    """Ask http://127.0.0.1:PORT/PATH (default /readyz); 0 when it answers 2xx."""
    port, path = argv[0], argv[1] if len(argv) > 1 else "/readyz"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{int(port)}{path}", timeout=3) as answer:
            return 0 if 200 <= answer.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{path}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
