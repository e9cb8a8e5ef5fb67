"""Reports of a diagnosis: text (rich), JSON (``json_report``), self-contained HTML (``html``)."""
