"""Runs one studio job: ``python -m sftpack.studio.runner JOB_DIR ARGV...``. Waits for the command
and writes its exit code to JOB_DIR/exit_code, so the studio knows how a job ended even after a
restart. A stop signal is passed on to the command."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path


def main() -> int:
    folder, argv = Path(sys.argv[1]), sys.argv[2:]
    child = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = child.wait()
    (folder / "exit_code").write_text(str(code))
    return code


if __name__ == "__main__":
    sys.exit(main())
