"""Run the scoring service: `python -m services.scoring`."""

from services.runtime.service import main
from services.scoring.service import SPEC

if __name__ == "__main__":
    main(SPEC)
