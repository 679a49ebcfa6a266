"""``python -m loraforge.cli`` (what torchrun and the tests launch) = the ``loraforge`` command."""

import sys

from loraforge.cli import main

if __name__ == "__main__":
    sys.exit(main())
