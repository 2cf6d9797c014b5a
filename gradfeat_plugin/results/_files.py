"""New files created as ``open(path, "w")`` creates them: mode 0o666 less the umask.

``tempfile.mkstemp`` makes its files 0o600 whatever the umask, so a table or plot
renamed into place from one stayed private to its writer. Here the kernel applies the
umask (and a folder's default ACL) when the file is created: nothing reads or changes
the process's umask, which another thread could be using at the same moment.
"""

from __future__ import annotations

import os
import secrets

#: Names tried before giving up on a unique temporary name.
_ATTEMPTS = 100


def create_new_file(path: str | os.PathLike) -> bool:
    """Create ``path`` empty unless it exists (checked and created in one step).

    Args:
        path: The file to create.

    Returns:
        Whether this call created it.
    """
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    os.close(handle)
    return True


def create_temporary_file(folder: str, prefix: str, suffix: str = "") -> str:
    """A new, empty file in ``folder`` with a unique name: ``tempfile.mkstemp``
    with the permissions of any new file.

    Args:
        folder: Where to create it (next to the file it will replace).
        prefix: The start of its name.
        suffix: The end of its name (e.g. the extension a writer reads).

    Returns:
        Its path.
    """
    for _ in range(_ATTEMPTS):
        path = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}{suffix}")
        if create_new_file(path):
            return path
    raise FileExistsError(f"no unused temporary name in {folder} in {_ATTEMPTS} tries")
