import sys

from r3d.cli.main import main

sys.exit(main())
