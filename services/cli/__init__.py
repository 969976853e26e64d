"""The ``scf`` command line."""
