"""``python -m flaskasync serve module:app``: see flaskasync._serve."""

import sys

if __name__ == "__main__":
    from flaskasync._serve import main

    sys.exit(main())
