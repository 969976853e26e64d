"""Run the orders service: `python -m services.orders`."""

from services.orders.service import SPEC
from services.runtime.service import main

if __name__ == "__main__":
    main(SPEC)
