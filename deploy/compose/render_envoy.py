"""Render Envoy's bootstrap and the first xDS files for compose, before Envoy starts.

compose.yaml runs this once in the gateway image (service `envoy-bootstrap`); Envoy starts
after it succeeds. The same functions render the bootstrap for `mcp-gateway up` and the tests,
so the compose Envoy runs exactly that configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mcp_gateway.config import ConfigError, load_config
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="the gateway config file")
    parser.add_argument("--out", required=True, help="where to write the Envoy bootstrap")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        for problem in err.problems:
            print(f"{args.config}: {problem.path}: {problem.message}", file=sys.stderr)
        return 2
    envoy = config.gateway.envoy
    if not envoy.xds_dir:
        print(f"{args.config}: gateway.envoy.xds_dir must be set for compose", file=sys.stderr)
        return 2
    params = BootstrapParams(
        listen=envoy.listen,
        admin_port=envoy.admin_port,
        broker=config.gateway.broker_listen,
        router=config.gateway.router_listen,
        xds_dir=envoy.xds_dir,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_bootstrap(params))
    os.chmod(out, 0o644)  # Envoy's image drops to its own user: the file must be world-readable
    XdsWriter(envoy.xds_dir).write_initial(config)  # Envoy refuses to start without them
    print(f"rendered {out} and {envoy.xds_dir}/{{cds,rds}}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
