"""What python3 runs for `ponte --interpreter host` (gateway/host.c), as `python3 -P -c THIS VERSION MODULE ARGV...`:
checks that this Python is the one ponte was built for, takes ponte's GIL library back out of LD_PRELOAD (it is
loaded already; the app's subprocesses must not inherit it), imports ponte's extension module from its file and
runs the server with ARGV, ponte's command line (its program name first). Compiled into ponte
(gateway/meson.build); its exit status is the server's."""


def _ponte_boot():
    import os
    import sys
    built_for, module, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    running = "%d.%d" % sys.version_info[:2]
    if running != built_for:
        sys.exit("ponte: error: %s is Python %s; ponte was built for %s (--interpreter embedded runs its own)"
                 % (sys.executable, running, built_for))
    os.environ.pop("LD_PRELOAD", None)
    was = os.environ.pop("PONTE_LD_PRELOAD_WAS", None)
    if was is not None:
        os.environ["LD_PRELOAD"] = was
    import importlib.util
    spec = importlib.util.spec_from_file_location("_ponte_host", module)
    ponte = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ponte)
    sys.argv = ["ponte"]  # as under --interpreter embedded
    return ponte.main(argv)


raise SystemExit(_ponte_boot())
