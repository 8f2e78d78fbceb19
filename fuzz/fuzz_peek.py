"""atheris target: peek never crashes and agrees with parse_message on every input
(same kind/method/id/name, or the same error code, id and HTTP status)."""

import sys

import atheris

with atheris.instrument_imports(include=["mcp_gateway", "_targets"]):
    from _targets import check_peek_against_parse


def test_one_input(data: bytes) -> None:
    check_peek_against_parse(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
