"""trail.provenance: the header every results file starts with."""

from __future__ import annotations

import re

from trail import provenance as prov


def test_provenance_names_machine_versions_and_commit() -> None:
    rec = prov.provenance("numpy", "no-such-distribution-xyz", label="x")
    assert rec["machine"] == prov.describe() and "cores" in rec["machine"]
    assert rec["torch"] and rec["trail"] and rec["numpy"]
    assert rec["no-such-distribution-xyz"] is None
    assert rec["label"] == "x" and isinstance(rec["threads"], int)
    # A checkout gives a short hash (maybe +dirty); an installed wheel says it cannot tell.
    assert re.fullmatch(r"[0-9a-f]{10}(\+dirty)?|\?", rec["commit"])


def test_extra_fields_override_the_defaults() -> None:
    assert prov.provenance(date="2026-01-01")["date"] == "2026-01-01"
