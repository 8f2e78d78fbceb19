"""The real Envoy accepts the rendered bootstrap and the generated xDS resources."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from mcp_gateway.config import parse_config
from mcp_gateway.router.xds import BootstrapParams, XdsWriter, render_bootstrap
from tests.support.envoy import envoy_binary

pytestmark = pytest.mark.integration


async def test_envoy_validates_the_bootstrap(tmp_path: Path) -> None:
    config = parse_config("servers:\n  - name: weather\n    url: https://weather.example/mcp\n    prefix: w_\n")
    XdsWriter(tmp_path / "xds").write_initial(config)
    bootstrap = tmp_path / "envoy.yaml"
    bootstrap.write_text(render_bootstrap(BootstrapParams(xds_dir=str(tmp_path / "xds"))))
    result = await trio.run_process(
        [envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--reject-unknown-dynamic-fields"],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
