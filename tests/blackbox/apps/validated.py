"""Wraps test apps in wsgiref.validate.validator and records any WSGI warning to $PONTE_TEST_WARNINGS, so the suite
can assert that ponte never makes the validator complain."""

import os
import warnings
from wsgiref.validate import validator

_path = os.environ.get("PONTE_TEST_WARNINGS")


def _record(message, category, filename, lineno, file=None, line=None):
    if _path:
        with open(_path, "a") as f:
            f.write("%s: %s (%s:%s)\n" % (category.__name__, message, filename, lineno))


warnings.showwarning = _record
warnings.simplefilter("always")


def validated(app):
    return validator(app)
