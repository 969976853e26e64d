"""The repayment service: schedules, payments, allocation, settlement."""
