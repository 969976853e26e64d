"""The lending service: facilities, underwriting, contracts, disbursement."""
