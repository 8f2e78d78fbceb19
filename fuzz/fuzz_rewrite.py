"""atheris target: replace_routing_name changes only the routing value of any routed request
peek accepts, and header values round-trip through the base64 encoded-word form."""

import sys

import atheris

with atheris.instrument_imports(include=["mcp_gateway", "_targets"]):
    from _targets import check_rewrite


def test_one_input(data: bytes) -> None:
    check_rewrite(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
