"""Mechanisms the knowledge base names that no check detects yet.

The spec's symptom table (kb/data/tools.yaml, 29.6.12.2) and alert rules may name these; ``isostack
where`` explains them. A check that learns to detect one moves its declaration into the check's own
``owns`` (the contract test fails while it is declared twice).
"""

from __future__ import annotations

from isostack.locate.checks._spec import Mechanism

MECHANISMS: tuple[Mechanism, ...] = (
    Mechanism("vf_reset", layer="L-0", title="SR-IOV VF reset or down (PF driver, NIC firmware, LLDP/DCB renegotiation)",
              fix="Read the PF driver's log for the VF reset cause, check the NIC firmware version and the switch "
                  "port's LLDP/DCB settings; `ip link show <pf>` for the VF state."),
)
