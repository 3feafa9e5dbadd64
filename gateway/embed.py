"""Build helper: turns a Python source file into a C header holding it as a string (gateway/meson.build)."""
import sys

src, dst, name = sys.argv[1], sys.argv[2], sys.argv[3]
with open(src, "rb") as f:
    data = f.read()
with open(dst, "w") as f:
    f.write("/* Generated from %s by gateway/embed.py. */\n" % src.rsplit("/", 1)[-1])
    f.write("static const char %s[] = {\n" % name)
    for i in range(0, len(data), 16):
        f.write("    " + ", ".join("0x%02x" % b for b in data[i:i + 16]) + ",\n")
    f.write("    0x00\n};\n")
