"""Write the OpenAPI document of the app to a file (`make openapi`).

`docs/openapi.json` is checked in so clients can be generated without running
the service; tests/unit/test_openapi.py fails when it no longer matches the app.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from api.app import create_app


def render() -> str:
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json")
    target.write_text(render())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
