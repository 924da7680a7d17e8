import sys

from vawm.sweep.cli import main

if __name__ == "__main__":
    sys.exit(main())
