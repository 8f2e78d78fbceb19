"""atheris target: parse_message on any bytes gives a message or a ProtocolError."""

import sys

import atheris

with atheris.instrument_imports(include=["mcp_gateway", "_targets"]):
    from _targets import check_parse


def test_one_input(data: bytes) -> None:
    check_parse(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
