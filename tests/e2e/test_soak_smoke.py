"""`make soak` is a separate, long target; this seconds-long run keeps tests/soak.py from
rotting: the same mix, sampling and checks, and the summary files it writes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import soak  # noqa: E402


def test_short_soak_passes_and_writes_its_summary(tmp_path):
    # A short run is mostly warm-up (token caches filling), so the drift limit is looser here.
    status = soak.main(["--seconds", "12", "--sample-seconds", "1", "--max-drift", "0.05", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "soak.json").read_text())
    assert status == 0, result["checks"]
    assert result["passed"] and all(result["checks"].values()), result["checks"]
    assert result["requests"] >= 200, result["mix"]
    # every class of the mix was exercised, the rate limit really bit
    assert set(result["mix"]) == {"allowed-cached", "allowed-cold", "denied", "bad-token", "mcp-allowed",
                                  "mcp-denied", "rate-limited"}, result["mix"]
    assert result["mix"]["rate-limited"].get("429", result["mix"]["rate-limited"].get(429, 0)) > 0, result["mix"]
    audit = result["audit"]
    assert audit["stored"] + audit["dropped"] - audit["late"] == audit["decisions"] == result["requests"], audit
    assert len(result["samples"]) >= 8
    assert "| RSS drift after warm-up |" in (tmp_path / "soak.md").read_text()
