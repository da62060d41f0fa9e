"""``dfe reproduce RECORDS``: score each record again from its own provenance alone and say
whether it agrees.

A record's ``provenance`` (:mod:`engine.provenance`) names the model folder and the
checksums of the graphs that ran, the detector file and its sha256, every score-changing option
and the input's identity. This command checks that the model, the detector and the input are
still what the record names (a difference is reported and gives exit code 2: the record can no
longer be reproduced here), then rebuilds the engine from the recorded settings only (no other
flag changes a score) and compares ``p_fake``. Exit code 0 when every ``ok`` record agrees
within ``--tolerance`` (1e-6: exact mode on one machine is deterministic), 1 when one differs,
2 when a model, detector or input no longer matches its checksum, or a record has no provenance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.options import EXIT_ERROR, EXIT_OK

log = logging.getLogger(__name__)

EXIT_DIFFERS = 1
DEFAULT_TOLERANCE = 1e-6


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="score records again from their own provenance and check they agree",
        description="Re-score every ok record of RECORDS (a dfe predict .jsonl/.csv file or a "
        "dfe score .parquet/.jsonl folder) from its provenance alone: the recorded model, "
        "detector, settings and input, each checked against its recorded checksum first. Exit "
        "code 0 when all agree within --tolerance, 1 when any differs (the table says which "
        "and by how much), 2 when a model, detector or input no longer matches its checksum "
        "or a record has no provenance.",
    )
    p.add_argument("records", type=Path, help="FILE.jsonl, FILE.csv, or a dfe score folder")
    p.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest |difference of p_fake| counted as the same (default {DEFAULT_TOLERANCE})",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="also write the per-record results to this file"
    )
    p.set_defaults(func=run)


@dataclass
class Check:
    """The outcome for one record: ``result`` is ``same``, ``differs``, ``changed`` (model,
    detector or input no longer what the record names), ``unverifiable`` (no provenance), or
    ``skipped`` (an error record)."""

    video: str
    result: str
    recorded: float | None = None
    now: float | None = None
    reason: str = ""

    @property
    def delta(self) -> float | None:
        if self.recorded is None or self.now is None:
            return None
        return abs(self.now - self.recorded)


def read_any(path: Path) -> list[dict[str, Any]]:
    """The records of a ``dfe predict`` file or a ``dfe score`` folder."""
    from core.errors import InvalidInputError
    from engine import distributed
    from engine.batch import OUTPUT_FORMATS, read_output

    kinds = "a dfe predict .jsonl or .csv file, or a dfe score folder (*.parquet, *.jsonl)"
    if path.is_dir():
        if path.suffix.lower() not in distributed.OUTPUT_FORMATS:
            raise InvalidInputError(f"{path} is not a folder of records; give {kinds}")
        records, _files, damaged = distributed.read_dataset(path)
        if damaged:
            log.warning("%s: %d damaged file(s) (killed writes); their torn parts are left out",
                        path, len(damaged))  # fmt: skip
        return records
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file or folder; give {kinds}")
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise InvalidInputError(f"{path} is not a file of records; give {kinds}")
    entries, torn = read_output(path)
    if torn:
        print(f"note: the last line of {path} is torn (an interrupted write); it is not a "
              "record and was left out", file=sys.stderr)  # fmt: skip
    return [e.record for e in entries]


def changed(prov: dict[str, Any]) -> str:
    """Why the model, detector or input a provenance names is no longer the one that made the
    record ("" when all three still match their checksums)."""
    from core.errors import EngineError
    from core.hashing import file_sha256
    from core.sidecar import load_sidecar
    from engine.provenance import input_identity, same_input

    model = prov.get("model") or {}
    try:
        spec = load_sidecar(model.get("path") or "")
        if model.get("graph") != "checkpoint":
            now = spec.verify_graphs(model.get("precision") or "fp32")
            for key in ("graph_sha256", "head_sha256"):
                if now[key] != model.get(key):
                    return f"the model's {key.replace('_sha256', '')} is not the recorded one"
        if spec.spec_sha256 != model.get("spec_sha256"):
            return "the model's sidecar (preprocessing, labels or reduction) changed"
        if spec.calibration_sha256 != model.get("calibration_sha256"):
            return "the model was calibrated again since (dfe calibrate)"
    except EngineError as exc:
        return f"the model cannot be checked: {exc}"
    detector = prov.get("detector")
    if detector:
        try:
            if file_sha256(detector["path"]) != detector.get("sha256"):
                return f"the detector {detector['path']} is not the recorded one (sha256)"
        except OSError as exc:
            return f"the detector {detector.get('path')} cannot be read ({exc})"
    recorded = prov.get("input") or {}
    if not recorded.get("path"):
        return "the record names no input file (frames given in memory)"
    now_input = input_identity(recorded["path"], content=bool(recorded.get("sha256")))
    if not same_input(recorded, now_input):
        return f"the input {recorded['path']} changed since (size, time or content)"
    return ""


def _config(prov: dict[str, Any]) -> tuple[Any, Any]:
    """The (EngineConfig, SequenceConfig) a provenance's settings describe."""
    from core.config import EngineConfig, SequenceConfig

    settings = dict(prov["settings"])
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    engine_kw = {k: v for k, v in settings.items() if k in fields}
    engine_kw["detector"] = (
        prov["detector"]["path"] if prov.get("detector") else engine_kw.get("detector", "det_500m")
    )
    engine_kw["download"] = False
    return EngineConfig(**engine_kw), SequenceConfig(
        seq_len=settings.get("seq_len"), sampling=settings.get("sampling") or "first"
    )


def reproduce(records: list[dict[str, Any]]) -> list[Check]:
    """Re-score ``records`` from their provenance (see the module docstring); one
    :class:`Check` per record, in order. Records that share a model and settings share one
    engine."""
    from engine.api import Engine

    checks: list[Check | None] = [None] * len(records)
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        prov = rec.get("provenance")
        if rec.get("status") != "ok":
            checks[i] = Check(rec.get("video", "?"), "skipped", reason="error record")
        elif why := _incomplete(rec):
            p = rec.get("p_fake") if _is_number(rec.get("p_fake")) else None
            checks[i] = Check(str(rec.get("video", "?")), "unverifiable", p, reason=why)
        elif why := changed(prov):
            checks[i] = Check(rec["video"], "changed", rec.get("p_fake"), reason=why)
        else:
            key = json.dumps(
                [prov["model"]["path"], prov["settings"], prov.get("detector")], sort_keys=True
            )
            groups.setdefault(key, []).append(i)
    for indices in groups.values():
        prov = records[indices[0]]["provenance"]
        config, sequence = _config(prov)
        engine = Engine.load(prov["model"]["path"], config=config)
        paths = [records[i]["provenance"]["input"]["path"] for i in indices]
        preds = engine.predict_many(paths, seq_len=sequence.seq_len, sampling=sequence.sampling)
        for i, pred in zip(indices, preds):
            rec = records[i]
            if not pred.ok:
                checks[i] = Check(rec["video"], "differs", rec["p_fake"], reason=pred.error or "")
            elif why := _other_fields_differ(rec, pred.to_record()):
                checks[i] = Check(rec["video"], "differs", rec["p_fake"], pred.p_fake, why)
            else:
                checks[i] = Check(rec["video"], "scored", rec["p_fake"], pred.p_fake)
    return [c for c in checks if c is not None]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _incomplete(record: dict[str, Any]) -> str:
    """Why a record cannot be reproduced from its own fields ("" when it can): no provenance,
    a setting missing or unknown, a probability that is not a number."""
    from core.config import EngineConfig, score_fields

    prov = record.get("provenance")
    if not isinstance(prov, dict) or not prov.get("model") or not prov.get("settings"):
        return "no provenance"
    if not isinstance((prov.get("input") or {}).get("path"), str):
        return "the provenance names no input file"
    settings = prov["settings"]
    wanted = {*score_fields(EngineConfig), "seq_len", "sampling"}
    missing = sorted(wanted - set(settings))
    unknown = sorted(set(settings) - wanted)
    if missing:
        return f"provenance incomplete: no {', '.join(missing)}"
    if unknown:
        return f"provenance names settings this version does not know: {', '.join(unknown)}"
    if not _is_number(record.get("p_fake")):
        return f"p_fake is not a number ({record.get('p_fake')!r})"
    return ""


#: Record fields compared besides p_fake: what a reader of the record acts on.
SAME_FIELDS = ("verdict", "label", "frames", "faces", "seq_len", "frame_indices", "boxes")


def _other_fields_differ(recorded: dict[str, Any], now: dict[str, Any]) -> str:
    """Which of the record's other fields the new score does not give again ("" when none):
    :data:`SAME_FIELDS` exactly, ``confidence`` and ``frame_p_fake`` within 1e-4."""
    for key in SAME_FIELDS:
        if key in recorded and recorded[key] != now.get(key):
            return f"{key}: {recorded[key]!r} in the record, {now.get(key)!r} now"
    conf = recorded.get("confidence")
    if conf is not None and (not _is_number(conf) or abs(conf - now["confidence"]) > 1e-4):
        return f"confidence: {conf!r} in the record, {now['confidence']:.4f} now"
    frames = recorded.get("frame_p_fake")
    if frames is not None:
        if not isinstance(frames, list) or len(frames) != len(now["frame_p_fake"]):
            return "frame_p_fake: not the frames scored now"
        worst = max((abs(a - b) for a, b in zip(frames, now["frame_p_fake"])), default=0.0)
        if worst > 1e-4:
            return f"frame_p_fake: up to {worst:.2e} from the recorded ones"
    return ""


def run(args: argparse.Namespace) -> int:
    from core.errors import InvalidInputError

    if not args.tolerance >= 0:
        raise InvalidInputError(f"--tolerance must be a number >= 0, got {args.tolerance}")
    records = read_any(args.records)
    if not any(r.get("status") == "ok" for r in records):
        raise InvalidInputError(
            f"{args.records} holds no ok record to reproduce ({len(records)} record(s), all errors)"
        )
    checks = reproduce(records)
    for c in checks:
        if c.result == "scored":
            c.result = "same" if c.delta is not None and c.delta <= args.tolerance else "differs"
    width = min(max(len(Path(c.video).name) for c in checks), 48)
    out = sys.stdout
    print(f"{'video':{width}s}  {'recorded':>9s}  {'now':>9s}  {'|delta|':>9s}  result", file=out)
    for c in checks:
        rec = "-" if c.recorded is None else f"{c.recorded:9.6f}"
        now = "-" if c.now is None else f"{c.now:9.6f}"
        delta = "-" if c.delta is None else f"{c.delta:9.2e}"
        note = f" ({c.reason})" if c.reason else ""
        print(
            f"{Path(c.video).name[:width]:{width}s}  {rec:>9s}  {now:>9s}  {delta:>9s}  "
            f"{c.result.upper() if c.result != 'same' else 'same'}{note}",
            file=out,
        )
    counts = {k: sum(c.result == k for c in checks) for k in ("same", "differs", "changed")}
    unverifiable = sum(c.result == "unverifiable" for c in checks)
    skipped = sum(c.result == "skipped" for c in checks)
    print(
        f"{counts['same']} agree, {counts['differs']} differ (tolerance {args.tolerance:g}), "
        f"{counts['changed']} changed since, {unverifiable} without provenance, "
        f"{skipped} error records skipped",
        file=sys.stderr,
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps([{**dataclasses.asdict(c), "delta": c.delta} for c in checks], indent=1)
            + "\n"
        )
    if counts["changed"] or unverifiable:
        return EXIT_ERROR
    return EXIT_DIFFERS if counts["differs"] else EXIT_OK
