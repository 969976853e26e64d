"""A bank's replica of the journal: verify before store, catch up, cosign, detect forks."""
