#!/usr/bin/python3
"""The house rules of ponte's C code, checked (TAP):

- formatted as .clang-format says (clang-format 14, Debian's);
- no file in server/ or gateway/ over 800 lines, and no function over 80 unless its leading comment says why
  with a sentence that starts "Long because";
- only gateway/ includes Python.h, and server/ includes nothing from gateway/;
- a request's lock and condition variable are taken in server/request.c only, the file that owns the channel.

Usage: check.py [--fix]   (--fix rewrites the files clang-format would change)"""

import glob
import os
import re
import shutil
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 80


def sources(*folders, ext=(".c", ".h")):
    out = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(REPO, folder, "*"))):
            if path.endswith(ext):
                out.append(path)
    return out


def rel(path):
    return os.path.relpath(path, REPO)


def strip_comments(text):
    """The code without comments and string literals (kept as empty pairs of quotes), lines preserved."""
    def blank(m):
        s = m.group(0)
        if s.startswith("/"):
            return re.sub(r"[^\n]", " ", s)
        return s[0] + s[0]
    return re.sub(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', blank, text, flags=re.S)


def functions(path):
    """(name, first line, length, leading comment) of each function definition: PEP 7 layout puts the name at
    column 0 on the line after the return type, and the closing brace at column 0."""
    lines = open(path).read().split("\n")
    out, start, name = [], None, None
    for i, line in enumerate(lines):
        m = re.match(r"^([A-Za-z_]\w*)\(", line)
        if m and start is None and i > 0 and lines[i - 1] and not lines[i - 1].endswith(";"):
            start, name = i, m.group(1)
        elif line.startswith("}") and start is not None:
            j, comment = start - 2, []
            while j >= 0 and (lines[j].startswith(("/*", " *")) or lines[j].endswith("*/")):
                comment.insert(0, lines[j])
                j -= 1
            out.append((name, start + 1, i - start + 1, "\n".join(comment)))
            start = None
    return out


class Tap:
    def __init__(self):
        self.n = self.failed = 0

    def check(self, ok, what, detail=""):
        self.n += 1
        print("%s %d - %s" % ("ok" if ok else "not ok", self.n, what))
        if not ok:
            self.failed += 1
            for line in detail.rstrip().split("\n"):
                print("# " + line)

    def done(self):
        print("1..%d" % self.n)
        return 1 if self.failed else 0


def check_format(tap, files, fix):
    tool = shutil.which("clang-format-14") or shutil.which("clang-format")
    if tool is None:
        tap.check(False, "clang-format is installed", "apt-get install clang-format")
        return
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
    if fix:
        subprocess.run([tool, "-i", "--style=file"] + files, check=True, cwd=REPO)
    bad = []
    for path in files:
        r = subprocess.run([tool, "--style=file", "--dry-run", "--Werror", path], capture_output=True, text=True,
                           cwd=REPO)
        if r.returncode != 0:
            first = next((l for l in r.stderr.split("\n") if "warning" in l or "error" in l), r.stderr[:200])
            bad.append("%s: %s" % (rel(path), first.replace(REPO + "/", "")))
    tap.check(not bad, "the C sources are formatted (%s; fix with tests/style/check.py --fix)" % version,
              "\n".join(bad))


def check_sizes(tap, files):
    long_files = ["%s: %d lines" % (rel(p), n) for p in files if p.endswith(".c")
                  for n in [open(p).read().count("\n")] if n > MAX_FILE_LINES]
    tap.check(not long_files, "no C file in server/ or gateway/ is over %d lines" % MAX_FILE_LINES,
              "\n".join(long_files))
    long_functions = []
    for path in files:
        for name, line, n, comment in functions(path):
            if n > MAX_FUNCTION_LINES and "Long because" not in comment:
                long_functions.append("%s:%d %s(): %d lines" % (rel(path), line, name, n))
    tap.check(not long_functions, "no function is over %d lines without saying why" % MAX_FUNCTION_LINES,
              "\n".join(long_functions))


def check_layering(tap, server, gateway):
    python_h = [rel(p) for p in server if re.search(r'#include\s*[<"]Python\.h[>"]', open(p).read())]
    tap.check(not python_h, "only gateway/ includes Python.h", "\n".join(python_h))
    reaches = [rel(p) for p in server if re.search(r'#include\s*"\.\./gateway/', open(p).read())]
    tap.check(not reaches, "server/ includes nothing from gateway/", "\n".join(reaches))
    owner = os.path.join(REPO, "server", "request.c")
    lock = re.compile(r"\breq\w*\s*(->|\.)\s*(lock|cond)\b|\.req\.(lock|cond)\b")
    takers = []
    for path in server + gateway:
        if path == owner or path.endswith(".h"):
            continue
        for i, line in enumerate(strip_comments(open(path).read()).split("\n"), 1):
            if lock.search(line):
                takers.append("%s:%d: %s" % (rel(path), i, line.strip()))
    tap.check(not takers, "a request's lock is taken in server/request.c only", "\n".join(takers))


def main():
    fix = "--fix" in sys.argv[1:]
    tap = Tap()
    server, gateway = sources("server"), sources("gateway")
    check_format(tap, server + gateway + sources("tests/unit") + sources("tests/fuzz"), fix)
    check_sizes(tap, server + gateway)
    check_layering(tap, server, gateway)
    return tap.done()


if __name__ == "__main__":
    sys.exit(main())
