"""Run a bank's replica: ``python -m services.replica --bank NAME`` (or ``scf replica``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from services.replica.config import ReplicaSettings
from services.replica.service import run_replica
from services.runtime.config import Settings
from services.runtime.errors import ConfigError
from services.runtime.logs import LOG_LEVELS, capture_native_stderr, setup_logging
from services.runtime.metrics import serve_metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.replica")
    parser.add_argument("--bank", required=True)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        capture_native_stderr()  # gRPC's C-core lines as log lines too
        setup_logging(f"replica-{args.bank}", settings.log_format, LOG_LEVELS[settings.log_level])
        if not settings.nats_url or not settings.database_url:
            raise ConfigError(
                "SCF_NATS_URL", "not set: start the platform with `scf up`, or set it"
            )
        replica = ReplicaSettings.from_env(args.bank, settings.database_url)
        serve_metrics(replica.metrics_addr)
        asyncio.run(run_replica(settings, replica))
    except ConfigError as exc:
        print(f"scf-replica-{args.bank}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
