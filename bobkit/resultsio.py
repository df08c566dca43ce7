"""Results in and out of bobkit: CSV, Parquet (pyarrow) and JSON, long or wide.

bobkit's exchange format is *long*: one line per (run, metric) with the columns of LONG_COLUMNS.
Reading also accepts what other people write, after `--map SRC=DST` renames:
- long:  backbone, dataset, metric, value (+ experiment, recipe, lr, seed, smoke, run_id);
- wide over metrics: backbone, dataset and one column per metric (top1, mrr, …);
- wide over datasets: a backbone column (e.g. the authors' `pt_arch`) and one column per dataset
  (e.g. their retrieval pivot: CUB200, iNat, …), with the metric given separately.
Records come out shaped like bobkit.results.finished_results(), so tables and verify take them as is.
Every problem names the file, the row and the column.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable

from bobkit.errors import BadInput
from bobkit.results import atomic_path, atomic_write_text

LONG_COLUMNS = ("run_id", "experiment", "backbone", "dataset", "recipe", "task", "protocol", "lr", "seed", "smoke",
                "metric", "value")
META_COLUMNS = ("experiment", "recipe", "task", "protocol", "lr", "seed", "smoke", "run_id", "unit", "source",
                "confidence", "tier", "n_runs")
BACKBONE_GUESSES = ("backbone", "pt_arch", "model", "arch", "backbone_id", "network", "name")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json"}


def file_format(path: Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise BadInput(f"{path}: unknown results format '{Path(path).suffix}'; use .csv, .parquet or .json")
    return fmt


# ----------------------------------------------------------------------------------- export

def long_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """finished_results() records → one row per metric, sorted for stable files."""
    rows = []
    for r in records:
        for metric, value in sorted((r.get("metrics") or {}).items()):
            rows.append({"run_id": r.get("run_id"), "experiment": r.get("experiment"), "backbone": r["backbone"],
                         "dataset": r["dataset"], "recipe": r.get("recipe"), "task": r.get("task"),
                         "protocol": r.get("protocol"), "lr": r.get("lr"), "seed": r.get("seed"),
                         "smoke": bool(r.get("smoke", False)), "metric": metric, "value": value})
    rows.sort(key=lambda x: tuple(str(x[c]) for c in ("experiment", "backbone", "dataset", "recipe", "lr", "seed",
                                                       "run_id", "metric")))
    return rows


def write_results(records: Iterable[dict[str, Any]], path: Path) -> int:
    """Write records in long form; the format follows the suffix. Atomic. Returns the row count."""
    path = Path(path)
    fmt = file_format(path)
    rows = long_rows(records)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=LONG_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
        atomic_write_text(path, buf.getvalue())
    elif fmt == "json":
        atomic_write_text(path, json.dumps(rows, indent=1, allow_nan=False) + "\n")
    else:
        _write_parquet(rows, path)
    return len(rows)


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("run_id", pa.string()), ("experiment", pa.string()), ("backbone", pa.string()),
                        ("dataset", pa.string()), ("recipe", pa.string()), ("task", pa.string()),
                        ("protocol", pa.string()), ("lr", pa.float64()), ("seed", pa.int64()),
                        ("smoke", pa.bool_()), ("metric", pa.string()), ("value", pa.float64())])
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


# ----------------------------------------------------------------------------------- import

class RawTable:
    """Columns and rows of a file, each row with the line/row number a user sees."""

    def __init__(self, path: Path, columns: list[str], rows: list[tuple[int, dict[str, Any]]]) -> None:
        self.path, self.columns, self.rows = path, columns, rows

    def error(self, line: int | None, column: str | None, problem: str) -> BadInput:
        where = str(self.path)
        if line is not None:
            where += f" row {line}"
        if column is not None:
            where += f", column '{column}'"
        return BadInput(f"{where}: {problem}")


def read_raw(path: Path) -> RawTable:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: results file not found")
    fmt = file_format(path)
    if fmt == "csv":
        return _read_csv(path)
    if fmt == "json":
        return _read_json(path)
    return _read_parquet(path)


def _read_csv(path: Path) -> RawTable:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip() and not ln.startswith("#")]
    if not numbered:
        raise BadInput(f"{path}: empty (no header line)")
    try:
        parsed = list(csv.reader([ln for _, ln in numbered]))
    except csv.Error as exc:
        raise BadInput(f"{path}: not valid CSV: {exc}") from None
    header = [h.strip() for h in parsed[0]]
    if len(set(header)) != len(header) or any(h == "" for h in header):
        dup = sorted({h for h in header if header.count(h) > 1 or h == ""})
        raise BadInput(f"{path} row {numbered[0][0]}: empty or repeated column name(s) {dup}; give every column "
                       "a unique name")
    rows = []
    for (line, _), cells in zip(numbered[1:], parsed[1:]):
        if len(cells) != len(header):
            raise BadInput(f"{path} row {line}: {len(cells)} cells but the header has {len(header)} columns")
        rows.append((line, {h: c.strip() for h, c in zip(header, cells)}))
    return RawTable(path, header, rows)


def _read_json(path: Path) -> RawTable:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BadInput(f"{path}: expected a JSON list of objects (one per result)")
    flat = []
    for r in data:
        if isinstance(r.get("metrics"), dict):  # finished_results()-shaped records
            for m, v in r["metrics"].items():
                flat.append({**{k: v2 for k, v2 in r.items() if k != "metrics"}, "metric": m, "value": v})
        else:
            flat.append(r)
    columns = list(dict.fromkeys(k for r in flat for k in r))
    return RawTable(path, columns, [(i + 1, r) for i, r in enumerate(flat)])


def _read_parquet(path: Path) -> RawTable:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise BadInput(f"{path}: not a readable Parquet file: {exc}") from None
    rows = table.to_pylist()
    return RawTable(path, list(table.column_names), [(i + 1, r) for i, r in enumerate(rows)])


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def resolve_dataset(catalog, name: str, experiment: str | None = None) -> str | None:
    """A dataset id for an id, display name or folder, or a one-dataset table setting's id or column title
    (the authors' pivot names, e.g. 'google_landmark'), compared without case and punctuation."""
    if name in catalog.datasets:
        return name
    key = _norm(name)
    for d in catalog.datasets.values():
        if key in {_norm(d.id), _norm(d.name), _norm(d.path)}:
            return d.id
    exps = [catalog.experiments[experiment]] if experiment in catalog.experiments else list(catalog.experiments.values())
    found = {s.datasets[0] for e in exps for s in e.table.settings
             if len(s.datasets) == 1 and key in {_norm(s.id), _norm(s.title)}}
    return found.pop() if len(found) == 1 else None


def parse_map(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items or ():
        if "=" not in item or item.startswith("=") or item.endswith("="):
            raise BadInput(f"--map {item!r}: write SRC=DST, e.g. --map pt_arch=backbone or --map CUB200=cub200")
        src, dst = item.split("=", 1)
        out[src.strip()] = dst.strip()
    return out


def _number(raw: RawTable, line: int, column: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "na", "n/a", "-", "–")):
        return None
    if isinstance(value, bool):
        raise raw.error(line, column, f"{value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise raw.error(line, column, f"{value!r} is not a number") from None
    if not math.isfinite(x):
        return None
    return x


def _backbone_column(raw: RawTable, columns: list[str]) -> str:
    for guess in BACKBONE_GUESSES:
        if guess in columns:
            return guess
    first = columns[0]
    if raw.rows and all(isinstance(r.get(first), str) and _looks_textual(r[first]) for _, r in raw.rows):
        return first
    raise raw.error(None, None, f"no backbone column among {', '.join(columns)}; name one with --map COL=backbone")


def _looks_textual(s: str) -> bool:
    try:
        float(s)
        return False
    except ValueError:
        return bool(s.strip())


def read_results(catalog, path: Path, *, mapping: dict[str, str] | None = None, experiment: str | None = None,
                 metric: str | None = None, unit: str = "auto") -> tuple[list[dict[str, Any]], list[str]]:
    """Records (finished_results() shape) from a results file, and notes on how it was read."""
    from bobkit.tables import canonical_backbone

    raw = read_raw(path)
    mapping = dict(mapping or {})
    for src in mapping:
        if src not in raw.columns:
            raise raw.error(None, None, f"--map names column '{src}', which the file lacks "
                                        f"(columns: {', '.join(raw.columns)})")
    columns = [mapping.get(c, c) for c in raw.columns]
    rename = dict(zip(raw.columns, columns))
    rows = [(line, {rename[k]: v for k, v in r.items() if k in rename}) for line, r in raw.rows]
    if not rows:
        raise raw.error(None, None, "no result rows")
    bcol = _backbone_column(raw, columns)
    notes: list[str] = []
    if experiment is not None and experiment not in catalog.experiments:
        from bobkit.errors import unknown_id

        raise unknown_id("experiment", experiment, sorted(catalog.experiments))
    data_cols = [c for c in columns if c not in META_COLUMNS and c != bcol]
    cells: list[tuple[int, str, dict[str, Any], str, str, float]] = []  # line, column, row, dataset, metric, value
    if "metric" in columns and "value" in columns:
        layout = "long"
        if "dataset" not in columns:
            raise raw.error(None, None, "long results need a dataset column; name one with --map COL=dataset")
        for line, r in rows:
            v = _number(raw, line, "value", r.get("value"))
            if v is None:
                raise raw.error(line, "value", f"{r.get('value')!r} is not a number")
            if not r.get("metric"):
                raise raw.error(line, "metric", "empty metric name")
            cells.append((line, "dataset", r, str(r["dataset"]), str(r["metric"]), v))
    elif "dataset" in columns:
        layout = "wide over metrics"
        metrics = [c for c in data_cols if c != "dataset"]
        if not metrics:
            raise raw.error(None, None, "no metric columns next to backbone and dataset")
        for line, r in rows:
            for m in metrics:
                v = _number(raw, line, m, r.get(m))
                if v is not None:
                    cells.append((line, "dataset", r, str(r["dataset"]), m, v))
    else:
        layout = "wide over datasets"
        if not data_cols:
            raise raw.error(None, None, "no dataset columns next to the backbone column")
        ids = {}
        for c in data_cols:
            ids[c] = resolve_dataset(catalog, c, experiment)
            if ids[c] is None:
                raise raw.error(None, c, f"'{c}' is not a dataset known to the manifests; map it with --map {c}=DATASET_ID")
        metric = metric or _single_metric(catalog, experiment, list(ids.values()))
        if metric is None:
            raise raw.error(None, None, "a table with one column per dataset needs --metric NAME (e.g. --metric mrr)")
        for line, r in rows:
            for c in data_cols:
                v = _number(raw, line, c, r.get(c))
                if v is not None:
                    cells.append((line, c, r, ids[c], metric, v))
        notes.append(f"metric '{metric}' for every dataset column")
    notes.insert(0, f"{path}: read as {layout} ({len(rows)} rows, {len(cells)} values)")
    scale = _unit_scale(raw, unit, [c[5] for c in cells], notes)
    records: dict[tuple, dict[str, Any]] = {}
    for line, col, r, dataset, m, v in cells:
        name = str(r.get(bcol, "")).strip()
        if not name:
            raise raw.error(line, bcol, "empty backbone name")
        backbone = canonical_backbone(catalog, name)
        if backbone not in catalog.backbones:
            raise raw.error(line, bcol, f"unknown backbone '{name}'; add it (or an alias) to the manifests, "
                                        f"or rename it with --map")
        ds = resolve_dataset(catalog, dataset, experiment) if layout != "wide over datasets" else dataset
        if ds is None:
            raise raw.error(line, col, f"unknown dataset '{dataset}'; `bobkit list datasets` shows the ids")
        exp = r.get("experiment") or experiment
        lr = _number(raw, line, "lr", r.get("lr")) if "lr" in r else None
        seed = _number(raw, line, "seed", r.get("seed")) if "seed" in r else None
        smoke = str(r.get("smoke", "")).strip().lower() in ("true", "1", "yes")
        recipe = r.get("recipe") or None
        run_id = r.get("run_id") or None
        key = (exp, backbone, ds, recipe, lr, seed, run_id, smoke)
        rec = records.setdefault(key, {
            "run_id": run_id or f"import:{backbone}:{ds}:{recipe or ''}:{lr}:{seed}", "experiment": exp,
            "backbone": backbone, "dataset": ds, "recipe": recipe, "task": catalog.datasets[ds].task,
            "protocol": r.get("protocol") or None, "lr": lr, "seed": int(seed) if seed is not None else 0,
            "smoke": smoke, "metrics": {}, "source_row": line})
        if m in rec["metrics"]:
            raise raw.error(line, col, f"duplicate value for {backbone}/{ds}/{m} (first at row {rec['source_row']}); "
                                       "keep one, or tell runs apart with lr, seed or run_id columns")
        rec["metrics"][m] = v * scale
    return list(records.values()), notes


def _single_metric(catalog, experiment: str | None, datasets: list[str]) -> str | None:
    exps = [catalog.experiments[experiment]] if experiment else list(catalog.experiments.values())
    found = {s.metric for e in exps for s in e.table.settings if set(s.datasets) & set(datasets)}
    return found.pop() if len(found) == 1 else None


def _unit_scale(raw: RawTable, unit: str, values: list[float], notes: list[str]) -> float:
    if unit == "fraction":
        return 1.0
    if unit == "percent":
        return 0.01
    if unit != "auto":
        raise BadInput(f"--unit {unit!r}: choose auto, fraction or percent")
    if values and max(abs(v) for v in values) > 1.0:
        if max(values) > 100.0:
            raise raw.error(None, None, f"values up to {max(values):g} are neither fractions nor percentages; "
                                        "give --unit")
        notes.append("values above 1 found: read as percentages (give --unit fraction to override)")
        return 0.01
    return 1.0
