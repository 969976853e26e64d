-- Cosignatures the journal collected from bank replicas (witnesses).
CREATE TABLE cosignatures (
    tree_size  bigint NOT NULL REFERENCES checkpoints (tree_size),
    witness    text NOT NULL,
    line       text NOT NULL,
    PRIMARY KEY (tree_size, witness)
);
