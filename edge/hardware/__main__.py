"""``python -m enerlink.edge.hardware``: the hardware edge as the systemd unit runs it (settings from
``ENERLINK_*`` only, e.g. /etc/enerlink/edge.env). ``enerlink edge --hardware`` does the same."""

from __future__ import annotations

import sys

from enerlink.config import Env
from enerlink.edge.hardware.runner import HardwareConfig, run_hardware
from enerlink.runtime import configure_logging, run_service


def main() -> int:
    config = HardwareConfig.from_env(Env())
    configure_logging(config.common.log_level, config.common.log_format)
    return run_service(lambda: run_hardware(config), name="edge", grace_s=20.0)


if __name__ == "__main__":
    sys.exit(main())
