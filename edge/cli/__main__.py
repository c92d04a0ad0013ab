"""`python -m edge.cli`: the edgegw command line."""

import sys

from edge.cli import main

sys.exit(main())
