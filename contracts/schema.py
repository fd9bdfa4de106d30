"""JSON Schema files generated from the event models.

``python -m contracts.schema docs/schema`` writes ``event.schema.json`` (the
whole union) and one file per event type. A test checks the committed files
match the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from contracts.events import EVENT_ADAPTER, EVENT_CLASSES


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema, for the union and for each event type."""
    out = {"event.schema.json": EVENT_ADAPTER.json_schema(mode="validation")}
    for name, cls in EVENT_CLASSES.items():
        out[f"{name}.schema.json"] = cls.model_json_schema(mode="validation")
    for schema in out.values():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "docs/schema")
    target.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (target / name).write_text(render(schema))
    print(f"wrote {len(schemas())} schema files to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
