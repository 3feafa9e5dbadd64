"""`python -m ponte ARGS`: runs the ponte executable installed with this package (pip puts it in the environment's
scripts folder, beside this Python) in this process's place, so that it is the same server, with the exact GIL
probe, as `ponte ARGS`. From a venv's python it serves from that venv (gateway/venv.c)."""

import os
import sys
import sysconfig


def main():
    exe = os.path.join(sysconfig.get_path("scripts"), "ponte")
    if not os.access(exe, os.X_OK):
        sys.exit("ponte: error: no ponte executable in %s (pip install ponte puts it there)" % os.path.dirname(exe))
    os.execv(exe, ["ponte"] + sys.argv[1:])


if __name__ == "__main__":
    main()
