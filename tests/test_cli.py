"""The training command line: refuses bad input in one line before compiling; writes tables."""

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

SMALL = ["--kind", "bootrp", "--ensemble-size", "2", "--hardness", "4", "--episodes", "240",
         "--rb-size", "400", "--learning-starts", "200", "--num-probe-states", "16", "--num-log-points", "10"]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "deepsea_scaling.train", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "args, option",
    [
        (["--kind", "dqn"], "--kind"),
        (["--ensemble-size", "0"], "--ensemble-size"),
        (["--hardness", "1"], "--hardness"),
        (["--seeds", "4:4"], "--seeds"),
        (["--seeds", "a:b"], "--seeds"),
        (["--episodes", "0"], "--num-episodes"),
        (["--env-name", "Pendulum-v1", "--num-env-steps", "100"], "--env-name"),
        (["--out", "/proc/no/such/dir/x.parquet"], "--out"),
        (["--out", "table.csv"], "--out"),
        (["--learning-rate", "fast"], "--learning-rate"),
        (["--cpu-devices", "0"], "--cpu-devices"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(tmp_path, args, option):
    base = {"--seeds": "0:2", "--out": str(tmp_path / "x.parquet")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [item for pair in base.items() for item in pair] + [a for a in args if a not in base and a not in base.values()]
    t0 = time.perf_counter()
    res = cli(*argv)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and option in lines[0], res.stderr
    assert time.perf_counter() - t0 < 20  # refused before any compilation
    assert not (tmp_path / "x.parquet").exists()


def test_help_describes_every_option():
    """Every TrainConfig field is an option whose help gives its accepted values."""
    import dataclasses

    from deepsea_scaling.config import TrainConfig, accepted

    res = cli("--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())  # argparse wraps lines
    for f in dataclasses.fields(TrainConfig):
        option = "--" + f.name.replace("_", "-")
        assert option in text, option
        assert " ".join(f"accepted: {accepted(f.name)}".split()) in text, f.name
    for option in ["--seeds", "--out", "--batch", "--cpu-devices", "--quiet"]:
        assert option in text


@pytest.mark.slow
def test_smoke_run_writes_table_and_sidecar_and_is_deterministic(tmp_path):
    outs = [tmp_path / "a" / "shard.parquet", tmp_path / "b" / "shard.parquet"]
    for out in outs:
        res = cli(*SMALL, "--seeds", "0:3", "--out", str(out))
        assert res.returncode == 0, res.stderr
        assert "100.0%" in res.stdout and "left" in res.stdout  # progress lines
    a, b = (pd.read_parquet(o) for o in outs)
    assert len(a) == 3 and a["seed"].tolist() == [0, 1, 2]
    assert (a["kind"] == "bootrp").all() and (a["ensemble_size"] == 2).all() and (a["prior_scale"] == 3.0).all()
    assert a["config_hash"].nunique() == 1 and len(a["diversity"][0]) == 10
    pd.testing.assert_frame_equal(a, b)
    meta = json.loads(outs[0].with_suffix(".json").read_text())
    assert meta["config_hash"] == a["config_hash"][0]
    assert meta["seeds"] == [0, 3] and "jax" in meta["versions"] and meta["jax_backend"] == "cpu"
    assert meta["compile_seconds"] > 0 and meta["run_seconds"] > 0 and "--seeds 0:3" in meta["command"]
    assert not list(outs[0].parent.glob(".*tmp*"))  # no temporary files left


@pytest.mark.slow
def test_batch_of_cells_alone_and_split_over_cpu_devices_train_the_same(tmp_path):
    """A batch of 4 runs (boot and bootrp with another learning rate: batched hyperparameters) writes
    each entry's table and sidecar, the rows of the cell trained alone; with --cpu-devices 3 it uses
    2 devices (the largest divisor): same training, same rows but for the Q-diversity curve, whose
    reductions XLA may order differently (last bit). A batch of two shapes is refused in one line."""
    base = {"ensemble_size": 2, "hardness": 4, "num_episodes": 240, "rb_size": 400, "learning_starts": 200,
            "num_probe_states": 16, "num_log_points": 10,
            "init": "flax", "warmup": "inside"}  # options under which these 4 short runs discover
    tables = {}
    for devices in (1, 3):
        entries = [
            {"config": {**base, "kind": "boot"}, "seeds": [0, 2], "out": str(tmp_path / f"d{devices}" / "boot.parquet")},
            {"config": {**base, "kind": "bootrp", "learning_rate": 1e-3}, "seeds": [2, 4],
             "out": str(tmp_path / f"d{devices}" / "rp.parquet")},
        ]
        res = cli("--batch", json.dumps(entries), "--cpu-devices", str(devices))
        assert res.returncode == 0, res.stderr
        tables[devices] = pd.concat([pd.read_parquet(e["out"]) for e in entries], ignore_index=True)
        meta = json.loads((tmp_path / f"d{devices}" / "rp.json").read_text())  # each table's sidecar: its entry
        assert meta["devices"] == (["cpu:0"] if devices == 1 else ["cpu:0", "cpu:1"]), meta["devices"]
        assert meta["seeds"] == [2, 4] and meta["batched_runs"] == 4 and meta["jax_backend"] == "cpu"
        assert pd.read_parquet(entries[1]["out"])["config_hash"].unique().tolist() == [meta["config_hash"]]
        assert pd.read_parquet(entries[0]["out"])[["kind", "seed"]].values.tolist() == [["boot", 0], ["boot", 1]]
    # the batch's rows are those of the same cell trained alone: the engine proves it for every entry
    # (test_engine.py::test_a_runs_row_is_the_same_alone_or_batched_with_other_cells); here the command
    # line's two paths agree, for the entry whose options differ most from the defaults
    alone = tmp_path / "alone" / "rp.parquet"
    rp = entries[1]
    res = cli(*[f"--{k.replace('_', '-')}={v}" for k, v in rp["config"].items()], "--seeds", "2:4", "--out", str(alone))
    assert res.returncode == 0, res.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "d1" / "rp.parquet"), pd.read_parquet(alone))
    # cells of other n train in one process and program (`engine.train_groups`), cells of another K cannot
    bad = [{**entries[0]}, {**entries[1], "config": {**entries[1]["config"], "ensemble_size": 3}}]
    res = cli("--batch", json.dumps(bad))
    assert res.returncode == 2 and "--batch" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    one, split = tables[1], tables[3]
    pd.testing.assert_frame_equal(one.drop(columns="diversity"), split.drop(columns="diversity"))
    for a, b in zip(one["diversity"], split["diversity"]):  # NaN before the first gradient step
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-5, atol=1e-7)
    assert one["discovered"].sum() > 0  # the runs did learn something to compare


@pytest.mark.slow
def test_eps_forces_one_member(tmp_path):
    out = tmp_path / "eps.parquet"
    res = cli(*SMALL, "--kind", "eps", "--ensemble-size", "5", "--seeds", "0:1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    t = pd.read_parquet(out)
    assert t["members"].tolist() == [1] and t["ensemble_size"].tolist() == [1]
