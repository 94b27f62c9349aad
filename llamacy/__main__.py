import sys

from llamacy.cli import main

sys.exit(main())
