"""What every stage entry point shares: one clear line and a non-zero exit for problems the user can fix."""

import sys

from catdog import CatdogError


def run(main) -> None:
    try:
        main()
    except CatdogError as error:
        sys.exit(f"catdog: error: {error}")
