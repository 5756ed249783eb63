"""A backend on the SDK that fills its log: three times over, it writes
256 KiB to standard output and waits until its log has been rotated (a new
file stands at the log's path), printing ``rotated N``; then ``done``. It
accepts connections and closes them meanwhile."""

import os
import sys
import threading
import time

import running_process as rp


def inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:  # between the rename and the new file
        return -1


def fill(log: str) -> None:
    for n in range(3):
        before = inode(log)
        sys.stdout.write(("x" * 1023 + "\n") * 256)
        sys.stdout.flush()
        deadline = time.monotonic() + 60
        while inode(log) in (before, -1) and time.monotonic() < deadline:
            time.sleep(0.005)
        print(f"rotated {n}", flush=True)
    print("done", flush=True)


def main() -> None:
    server = rp.BackendServer.from_env()
    threading.Thread(target=fill, args=(os.environ[rp.ENV_LOG_FILE],), daemon=True).start()
    while True:
        conn = server.accept()
        if conn is None:
            return
        conn.close()


main()
