"""Run the repayment service: `python -m services.repayment`."""

from services.repayment.service import SPEC
from services.runtime.service import main

if __name__ == "__main__":
    main(SPEC)
