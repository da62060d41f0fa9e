"""Ray Data scoring on a local 2-CPU Ray cluster (CPU only): parity with `dfe predict`, bad files,
a killed worker, resume, and `dfe eval --ray`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.config import EngineConfig, RayConfig, SequenceConfig
from core.errors import InvalidInputError
from engine import distributed
from tests.engine.test_evaluation import run_command, write_shared_labels

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")

# one xdist worker runs these tests one after another, so that one cluster serves them all and
# stops when they are done (its daemons take ~3% of a core while they wait)
pytestmark = pytest.mark.xdist_group("ray")

SEQ_LEN = 6
FIELDS = ("video", "status", "label", "p_fake", "confidence", "frames", "faces", "frame_p_fake",
          "frame_indices", "boxes", "seq_len", "crop_style")  # fmt: skip


@pytest.fixture(scope="module")
def ray_cluster():
    """One local cluster for this module's tests. Ray 2.60 turns on token authentication for local
    clusters and writes a token to ~/.ray; this throwaway cluster lives on this machine only,
    so the tests turn it off rather than touch the home directory."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def config(shared_dir):
    return EngineConfig(backend="ort", models_dir=str(shared_dir / "models"), download=False)


def seq(n: int) -> SequenceConfig:
    return SequenceConfig(seq_len=n)


def test_default_cpus_per_worker_leaves_a_cpu_for_the_read_stage():
    assert distributed.default_cpus_per_worker(2, 2) == 0.5
    assert distributed.default_cpus_per_worker(2, 1) == 1.0
    assert distributed.default_cpus_per_worker(1, 1) == 0.25
    assert distributed.default_cpus_per_worker(64, 8) == 1.0


def test_actors_are_sized_by_their_reserved_cpus_not_the_node():
    base = EngineConfig(backend="ort")
    one = distributed.actor_config(base, SequenceConfig(seq_len=20), cpus=1)
    assert (one.compute_workers, one.decode_workers) == (1, 1)
    four = distributed.actor_config(base, SequenceConfig(seq_len=20, sampling="uniform"), cpus=4)
    assert (four.compute_workers, four.decode_workers) == (4, 4)
    half = distributed.actor_config(base, SequenceConfig(seq_len=20), cpus=0.5)
    assert (half.compute_workers, half.decode_workers) == (1, 1)
    told = distributed.actor_config(
        base.replace(compute_workers=3, decode_workers=5), SequenceConfig(seq_len=20), cpus=1
    )
    assert (told.compute_workers, told.decode_workers) == (3, 5)
    gpu = distributed.actor_config(EngineConfig(), SequenceConfig(seq_len=20), cpus=8, gpus=1)
    assert (gpu.backend, gpu.decode_workers) == ("ort-cuda", 2)


def test_records_survive_storage_form():
    from engine.records import Prediction

    rec = Prediction(
        video="v", status="ok", timings={"total": 1.5}, boxes=[[1, 2, 3, 4], None]
    ).to_record()
    table = distributed.records_table([rec])
    assert table.schema.names == list(rec)  # every field of the record, in order
    back = distributed.decode_record(table.to_pylist()[0])
    assert back == rec


def test_ray_score_reproduces_dfe_predict(ray_cluster, tiny_model, video_paths, tmp_path,
                                          config):  # fmt: skip
    from engine.api import Engine

    engine = Engine.load(tiny_model, config=config.replace(intra_op_threads=1))
    local = {
        p.video: p.to_record() for p in engine.predict_many(map(str, video_paths), seq_len=SEQ_LEN)
    }
    out = tmp_path / "scores.parquet"
    scored, skipped = distributed.score(
        video_paths,
        tiny_model,
        out,
        config=config,
        sequence=seq(SEQ_LEN),
        layout=RayConfig(num_workers=2),
    )
    assert (scored, skipped) == (len(video_paths), 0)
    records = distributed.read_records(out)
    assert sorted(r["video"] for r in records) == sorted(local)
    for r in records:
        want = local[r["video"]]
        assert r["status"] == "ok" and r["frames"] == SEQ_LEN
        assert {k: r[k] for k in FIELDS} == {k: want[k] for k in FIELDS}
        assert set(r) == set(want) and set(r["timings"]) == set(want["timings"])
    # a rerun skips everything already scored and writes nothing new
    assert distributed.score(
        video_paths, tiny_model, out, config=config, sequence=seq(SEQ_LEN)
    ) == (
        0,
        len(video_paths),
    )
    assert len(distributed.read_records(out)) == len(video_paths)


def test_ray_bad_files_become_error_records(ray_cluster, tiny_model, shared_dir, tmp_path,
                                            config):  # fmt: skip
    d = tmp_path / "mixed"
    d.mkdir()
    good = shared_dir / "videos" / "pair480p_real.mp4"
    (d / "good.mp4").symlink_to(good)
    (d / "zero.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is not a video\n")
    (d / "truncated.mp4").write_bytes(good.read_bytes()[:4000])
    paths = [*sorted(str(p) for p in d.iterdir()), str(d / "absent.mp4")]
    out = tmp_path / "scores.jsonl"
    distributed.score(paths[:2], tiny_model, out, config=config, sequence=seq(SEQ_LEN))
    # the rerun scores the rest and retries notes.mp4's error record, in the same directory
    scored, skipped = distributed.score(
        paths, tiny_model, out, config=config, sequence=seq(SEQ_LEN)
    )
    assert (scored, skipped) == (len(paths) - 1, 1)
    recs = {Path(r["video"]).name: r for r in distributed.read_records(out)}
    assert len(distributed.read_records(out)) == len(paths) == len(recs)
    assert recs["good.mp4"]["status"] == "ok" and recs["good.mp4"]["faces"] == SEQ_LEN
    for name in ("zero.mp4", "notes.mp4", "truncated.mp4", "absent.mp4"):
        assert recs[name]["status"] == "error" and name in recs[name]["error"], recs[name]


def test_ray_killed_worker_is_retried_without_loss_or_duplicates(
    ray_cluster, tiny_model, video_paths, tmp_path, config, monkeypatch
):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(distributed.CRASH_ONCE_ENV, f"pair480p_fake:{marker}")
    paths = [str(p) for p in video_paths[:2]] + [
        str(p) for p in video_paths if "pair480p_fake" in p.name
    ]
    out = tmp_path / "scores.parquet"
    layout = RayConfig(videos_per_batch=1, num_workers=1)
    distributed.score(paths, tiny_model, out, config=config, sequence=seq(4), layout=layout)
    assert marker.exists()  # the worker really died once
    records = distributed.read_records(out)
    assert sorted(r["video"] for r in records) == sorted(paths)
    assert all(r["status"] == "ok" for r in records)


def test_ray_video_that_always_kills_its_worker_becomes_an_error_record(
    ray_cluster, tiny_model, video_paths, tmp_path, config, monkeypatch
):
    monkeypatch.setenv(distributed.CRASH_ALWAYS_ENV, "pair480p_fake")
    bad = next(str(p) for p in video_paths if "pair480p_fake" in p.name)
    good = [str(p) for p in video_paths if "pair480p_fake" not in p.name][:2]
    paths = [good[0], bad, good[1]]  # one batch: the batch dies, then the culprit alone
    out = tmp_path / "scores.jsonl"
    layout = RayConfig(videos_per_batch=3, num_workers=1)
    distributed.score(paths, tiny_model, out, config=config, sequence=seq(4), layout=layout)
    records = {r["video"]: r for r in distributed.read_records(out)}
    assert sorted(records) == sorted(paths)
    assert [records[p]["status"] for p in good] == ["ok", "ok"]
    assert records[bad]["status"] == "error"
    assert f"killed the worker process {distributed.MAX_CRASHES} times" in records[bad]["error"]
    assert not distributed._LEDGERS  # the job's ledger actor was released


def test_eval_with_ray(ray_cluster, tiny_model, shared_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    write_shared_labels(labels)
    out = tmp_path / "eval"
    rc = run_command(
        "engine.commands.eval",
        ["eval", str(labels), "--model", str(tiny_model), "--seq-len", "4", "--ray",
         "--root", str(shared_dir / "videos"), "-o", str(out), "--no-plots", "--backend", "ort",
         "--models", str(shared_dir / "models"), "--no-download"],
    )  # fmt: skip
    assert rc == 0
    (result,) = json.loads((out / "metrics.json").read_text())["results"]
    assert result["scored"] == 6 and sum(result["verdicts"].values()) == 6
    # the confusion matrix holds the decided videos (FAKE or REAL) only; every scored video is
    # counted by its true class and verdict
    assert [sum(c.values()) for c in result["verdicts_by_class"].values()] == [4, 2]
    assert sum(map(sum, result["confusion_matrix"])) == result["decided"]


def test_dfe_score_cli_local_then_ray_resumes(ray_cluster, tiny_model, shared_dir, tmp_path,
                                              capsys):  # fmt: skip
    d = tmp_path / "in"
    d.mkdir()
    names = ["pair480p_real.mp4", "pair480p_fake.mp4", "dfdc_like_real.mp4"]
    for name in names:
        (d / name).symlink_to(shared_dir / "videos" / name)
    out = tmp_path / "cli.parquet"
    common = ["--model", str(tiny_model), "--out", str(out), "--seq-len", "4"]
    common += ["--backend", "ort", "--models", str(shared_dir / "models"), "--no-download"]
    first_two = [str(p) for p in sorted(d.iterdir())[:2]]
    assert run_command("engine.commands.score", ["score", *first_two, *common]) == 0
    # an existing OUT is refused without --resume; with other settings too (on Ray as well)
    with pytest.raises(InvalidInputError, match="already holds results"):
        run_command("engine.commands.score", ["score", str(d), "--ray", *common])
    other = [*common, "--seq-len", "5"]
    with pytest.raises(InvalidInputError, match="--seq-len: 4 in the record, 5 now"):
        run_command("engine.commands.score", ["score", str(d), "--ray", "--resume", *other])
    assert len(distributed.read_records(out)) == 2
    assert (
        run_command("engine.commands.score", ["score", str(d), "--ray", "--resume", *common]) == 0
    )
    assert "1/1 scored, 0 errors, 2 skipped (2 already in" in capsys.readouterr().err
    records = distributed.read_records(out)
    assert sorted(Path(r["video"]).name for r in records) == sorted(names)
    assert all(r["status"] == "ok" and r["frames"] == 4 for r in records)
