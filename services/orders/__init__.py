"""The orders service: registration, confirmation, milestones, pledge, settlement."""
