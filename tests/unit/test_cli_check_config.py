"""`mcp-gateway check-config FILE`, run as a user runs it: the installed console script."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "mcp-gateway"


def check_config(path: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_valid_kuadrant_file_exits_0_with_a_summary_and_no_credential() -> None:
    result = check_config(ROOT / "examples" / "kuadrant-config.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "valid, 4 server(s), 3 enabled, 1 virtual server(s)" in lines[0]
    assert lines[1].split() == ["NAME", "PREFIX", "URL", "TRANSPORT", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[2:6]}
    assert rows["mcp-test/mcp-server1-route"] == [
        "mcp-test/mcp-server1-route",
        "test1_",
        "http://mcp-test-server1.mcp-test.svc.cluster.local:9090/mcp",
        "http",
        "Enabled",
    ]
    assert rows["mcp-test/mcp-server3-route"][-1] == "Disabled"
    assert rows["weather-service"][1] == "weather_"
    assert "test-api-key-secret-token" not in result.stdout + result.stderr
    # Valid, with what a migrating user should know: keys kept but unused, cleartext credentials.
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert warnings == [
        "warning: servers[1].url: the credential would cross the network unencrypted: use https (line 13)",
        "warning: servers[2].caCert: kept but not used: https upstreams are verified against the "
        "default CA bundle (line 27)",
    ]


def test_example_config_for_make_up_is_valid() -> None:
    result = check_config(ROOT / "examples" / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert "dynamic" in result.stdout and "slow" in result.stdout


def test_bad_prefix_duplicate_name_and_bad_url_listed_with_paths(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            servers:
              - name: github
                url: http://127.0.0.1:9101/mcp
                prefix: gh_
              - name: github
                url: http://127.0.0.1:9102/mcp
                prefix: "not valid!"
              - name: weather
                url: ftp://weather.example.com/mcp
                prefix: wx_
                credential: Bearer do-not-print-me
            """
        )
    )
    result = check_config(config)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"{config}: 3 problem(s)"
    assert lines[1].startswith("  servers[1].name: duplicate server name 'github'")
    assert lines[2].startswith("  servers[1].prefix: invalid prefix 'not valid!'")
    assert lines[3].startswith("  servers[2].url: scheme must be http or https")
    assert "do-not-print-me" not in result.stderr
    assert "Traceback" not in result.stderr


def test_file_problems_get_one_precise_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    broken = tmp_path / "broken.yaml"
    broken.write_text("servers:\n  - name: a\n    url: [http://x\n")
    cases = [
        (tmp_path / "missing.yaml", "no such file"),
        (empty, "the file is empty"),
        (broken, "YAML syntax error at line 4"),
        (tmp_path, "is a directory"),
    ]
    for path, expected in cases:
        result = check_config(path)
        assert result.returncode == 1, path
        assert result.stderr.splitlines()[0] == f"{path}: 1 problem(s)"
        assert expected in result.stderr.splitlines()[1], result.stderr
        assert "Traceback" not in result.stderr
