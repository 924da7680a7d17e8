import sys

from vawm.cli import main

sys.exit(main())
