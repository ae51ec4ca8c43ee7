"""The JSON schemas of the report files, generated from their models in :mod:`automation.report`
into ``docs/schemas/`` (``smoke.schema.json``, ``bench.schema.json``) for whoever reads
``out/<stack>/*.json``; ``tests/unit/test_automation_schemas.py`` fails when a committed schema
drifts from the models.

    python -m automation.schemas            # rewrite the schemas that drifted
    python -m automation.schemas --check    # name them and exit 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from pydantic import BaseModel

from automation.paths import PROJECT_DIR
from automation.report import BenchReport, SmokeReportFile

SCHEMA_DIR = PROJECT_DIR / "docs" / "schemas"
MODELS: dict[str, type[BaseModel]] = {"smoke.schema.json": SmokeReportFile, "bench.schema.json": BenchReport}
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def render(model: type[BaseModel]) -> str:
    """The schema file of ``model``: JSON Schema 2020-12, as pydantic generates it for validation."""
    return json.dumps({"$schema": DIALECT, **model.model_json_schema()}, indent=2, ensure_ascii=False) + "\n"


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files in ``directory`` that are missing or differ from the models."""
    return [name for name, model in MODELS.items()
            if not (directory / name).is_file() or (directory / name).read_text() != render(model)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m automation.schemas",
                                     description="Write (or --check) the report schemas in docs/schemas/.")
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="where the schemas are (default docs/schemas)")
    parser.add_argument("--check", action="store_true", help="only name the drifted schemas (exit 1 if any)")
    args = parser.parse_args(argv)
    stale = drifted(args.dir)
    for name in stale:
        if args.check:
            print(f"{args.dir / name} drifted from automation/report.py: run python -m automation.schemas",
                  file=sys.stderr)
        else:
            args.dir.mkdir(parents=True, exist_ok=True)
            (args.dir / name).write_text(render(MODELS[name]))
            print(f"wrote {args.dir / name}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
