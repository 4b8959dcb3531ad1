import sys

from longqa.launch import entry

sys.exit(entry())
