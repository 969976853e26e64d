"""The journal: sequencer, Merkle tree, signed checkpoints, audit API."""
