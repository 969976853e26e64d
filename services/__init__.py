"""SCF: supply-chain financing with a journal that banks can audit."""
