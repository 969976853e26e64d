"""Run the lending service: `python -m services.lending`."""

from services.lending.service import SPEC
from services.runtime.service import main

if __name__ == "__main__":
    main(SPEC)
