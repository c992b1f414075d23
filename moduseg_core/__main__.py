import sys

from moduseg_core.cli import main

sys.exit(main())
