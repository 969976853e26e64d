"""Run the journal service: `python -m services.journal`."""

from services.journal.service import SPEC
from services.runtime.service import main

if __name__ == "__main__":
    main(SPEC)
