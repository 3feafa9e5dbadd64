"""ponte, an HTTP server for WSGI and ASGI apps that shows the GIL live. The server is the `ponte` executable (C);
this package holds what it runs inside python3 (_ponte_host, libponte-gil.so) and `python -m ponte`."""
