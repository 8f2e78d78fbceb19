"""Every limits section the config accepts builds the parser's Limits (no startup ValueError)."""

import pytest

from mcp_gateway.config import ConfigError, parse_config
from mcp_gateway.protocol import Limits

BASE = """
servers:
  - name: one
    url: http://127.0.0.1:9101/mcp
    prefix: one_
gateway:
  limits:
    max_depth: {depth}
"""


@pytest.mark.parametrize("depth", [2, 64, 256])
def test_accepted_depths_build_parser_limits(depth: int) -> None:
    limits = parse_config(BASE.format(depth=depth)).gateway.limits
    assert Limits(
        max_body_bytes=limits.max_body_bytes,
        max_depth=limits.max_depth,
        max_batch=limits.max_batch,
        max_string_length=limits.max_string_length,
    ).max_depth == depth


def test_a_depth_the_parser_cannot_honour_is_a_config_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE.format(depth=257))
    assert any("max_depth" in problem.path for problem in caught.value.problems)
