import sys

from session_tally.cli import main

sys.exit(main())
