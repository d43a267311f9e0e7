#!/usr/bin/env python3
"""Container ENTRYPOINT: ``serve`` starts the model server; anything else is executed.

SageMaker runs ``docker run IMAGE serve``; ``docker run IMAGE bash`` (or any command) runs
that command instead, so the image is also a normal shell for debugging.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    """Dispatch on the first argument (default ``serve``)."""
    args = argv[1:] or ["serve"]
    if args[0] == "serve":
        from scorer.cli import main as cli_main

        return cli_main(["serve", *args[1:]])
    os.execvp(args[0], args)
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv))
