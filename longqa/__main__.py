import sys

from longqa.cli import entry

sys.exit(entry())
