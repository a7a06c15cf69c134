import sys

from enerlink.cli import main

sys.exit(main())
