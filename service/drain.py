"""The drain flag: raised by the gunicorn master on SIGTERM, read by /readyz in every worker."""

import mmap


class DrainFlag:
    """One byte of anonymous shared memory: set in the master, seen by every forked worker."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, 1)

    def set(self) -> None:
        self._page[0] = 1

    @property
    def is_set(self) -> bool:
        return self._page[0] == 1
