"""Files only their owner may read (tokens, keyrings, the stack's DSNs with their password).

Written to a new file created with mode 0600 in the same folder, then renamed over the target:
the text is never in a file others may read, not even for an instant, and a reader never sees
half of it. An older copy with a wider mode is replaced, not reused.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

MODE = 0o600


def write_private(path: Path, text: str) -> None:
    """Write text to path, readable and writable by its owner only."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, MODE)
    try:
        with os.fdopen(fd, "w") as file:
            os.fchmod(file.fileno(), MODE)  # whatever the umask left of it
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
