"""An app whose import takes the GIL 20,000 times (time.sleep(0) lets go of it and takes it back), as an import
that runs Django's migrations does around each sqlite call: --gil-trace must keep every one of those holds."""

import time

IMPORT_HOLDS = 20000
for _ in range(IMPORT_HOLDS):
    time.sleep(0)


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"churned"]
