"""``python -m modelpull.cli``."""

from . import main

main()
