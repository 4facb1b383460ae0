"""Bad input is refused before anything compiles, in one line naming the option, the value
and what is accepted; and a failed write leaves no output that claims a missing table."""

import errno
import json
import subprocess
import sys
import time

import pandas as pd
import pytest

from deepsea_scaling import config as C
from deepsea_scaling.config import ConfigError, TrainConfig
from deepsea_scaling.kinds import KINDS

SMALL = {"ensemble_size": 2, "hardness": 4, "num_episodes": 240, "rb_size": 400, "learning_starts": 200,
         "num_probe_states": 16, "num_log_points": 10}


def cli(*args, timeout=120):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "deepsea_scaling.train", *args],
                         capture_output=True, text=True, timeout=timeout)
    return res, time.perf_counter() - t0


def assert_refused(res, seconds, tmp_path, *fragments, limit=10.0):
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr  # one line, no traceback
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert seconds < limit  # refused before any compile
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing written


@pytest.mark.parametrize("args, fragments", [
    (["--discovery-threshold", "2.0"], ["--discovery-threshold=2.0", "(0, 0.99]"]),
    (["--discovery-threshold", "-1"], ["--discovery-threshold=-1.0", "(0, 0.99]"]),
    (["--discovery-threshold", "nan"], ["--discovery-threshold=nan", "finite", "(0, 0.99]"]),
    (["--weight-decay", "nan"], ["--weight-decay=nan", "finite number >= 0"]),
    (["--learning-rate", "inf"], ["--learning-rate=inf", "finite number > 0"]),
    (["--gamma", "1.5"], ["--gamma=1.5", "[0, 1]"]),
    (["--ensemble-size", "abc"], ["--ensemble-size", "'abc'", "integer >= 1"]),
    (["--episodes", "10", "--hardness", "4", "--warmup", "inside"],
     ["--num-episodes=10", "warm-up", "4 vector steps", "takes 417", "learning would never start"]),
    (["--episodes", "5", "--hardness", "4"], ["--num-episodes=5", "no learning step", "5 * 4 // 24 = 0",
                                             "at least 6 episodes"]),
    (["--env-name", "Acrobot-v1", "--num-env-steps", "1000", "--discovery-threshold", "0.95"],
     ["--num-env-steps=1000", "warm-up"]),
])
def test_cli_refuses_bad_values_in_one_line(tmp_path, args, fragments):
    res, seconds = cli("--seeds", "0:2", "--out", str(tmp_path / "out" / "x.parquet"), *args)
    # another environment is checked by importing gymnax (seconds on a busy machine), not by compiling
    limit = 10.0 if "--env-name" not in args else 30.0
    assert_refused(res, seconds, tmp_path / "out", *fragments, limit=limit)


def test_deepsea_threshold_means_nothing_elsewhere():
    cfg = TrainConfig(env_name="SpaceInvaders-MinAtar", num_env_steps=50_000, rb_size=1000, learning_starts=500)
    with pytest.raises(ConfigError, match=r"--discovery-threshold=0.95 .*DeepSea's threshold.*SpaceInvaders"):
        cfg.validate()
    cartpole, note = C.for_environment(TrainConfig(env_name="CartPole-v1", num_env_steps=50_000))
    assert cartpole.discovery_threshold == 475.0 and "CartPole-v1's solved return" in note
    chosen = TrainConfig(env_name="CartPole-v1", num_env_steps=50_000, discovery_threshold=200.0)
    assert C.for_environment(chosen) == (chosen, None)  # a threshold the user chose is kept
    assert C.for_environment(TrainConfig()) == (TrainConfig(), None)  # DeepSea: unchanged


@pytest.mark.parametrize("entry_config, fragments", [
    ({"ensemble_size": "abc"}, ["--batch entry 1: ensemble_size='abc'", "integer >= 1"]),
    ({"ensemble_size": "2"}, ["--batch entry 1: ensemble_size='2'", "integer >= 1"]),
    ({"discovery_threshold": 2.0}, ["--batch entry 1: --discovery-threshold=2.0", "(0, 0.99]"]),
    ({"learning_rate": "fast"}, ["--batch entry 1: learning_rate='fast'", "finite number > 0"]),
    ({"no_such_option": 1}, ["--batch entry 1: unknown hyperparameter", "no_such_option"]),
])
def test_batch_entries_are_checked_like_the_command_line(tmp_path, entry_config, fragments):
    entries = [{"config": {**SMALL, "kind": "boot"}, "seeds": [0, 2]},
               {"config": {**SMALL, "kind": "bootrp", **entry_config}, "seeds": [0, 2]}]
    res, seconds = cli("--batch", json.dumps(entries), "--out", str(tmp_path / "out" / "g.parquet"))
    assert_refused(res, seconds, tmp_path / "out", *fragments)


def test_batch_refuses_two_entries_writing_one_table(tmp_path):
    out = str(tmp_path / "out" / "same.parquet")
    entries = [{"config": {**SMALL, "kind": "boot"}, "seeds": [0, 2], "out": out},
               {"config": {**SMALL, "kind": "bootrp"}, "seeds": [0, 2], "out": out}]
    res, seconds = cli("--batch", json.dumps(entries))
    assert_refused(res, seconds, tmp_path / "out", "--batch entry 1: out=", "entry 0 writes there too")


def test_batch_refuses_the_same_run_twice_and_mixed_outs(tmp_path):
    twice = [{"config": {**SMALL, "kind": "boot"}, "seeds": [0, 2]},
             {"config": {**SMALL, "kind": "boot"}, "seeds": [1, 3]}]
    res, seconds = cli("--batch", json.dumps(twice), "--out", str(tmp_path / "out" / "g.parquet"))
    assert_refused(res, seconds, tmp_path / "out", "--batch entry 1", "entry 0 trains the same cell's seeds 0:2")
    mixed = [{**twice[0], "out": str(tmp_path / "out" / "a.parquet")}, {**twice[1], "seeds": [2, 4]}]
    res, seconds = cli("--batch", json.dumps(mixed))
    assert_refused(res, seconds, tmp_path / "out", "--batch is invalid", '"out"')
    res, seconds = cli("--batch", "@" + str(tmp_path / "missing.json"), "--out", str(tmp_path / "out" / "g.parquet"))
    assert_refused(res, seconds, tmp_path / "out", "--batch=@", "cannot read")


# ------------------------------------------------------- one field, one place
def test_coerce_field_shares_the_bounds_of_the_declaration():
    assert C.coerce_field("learning_rate", 1, "x") == 1.0 and isinstance(C.coerce_field("learning_rate", 1, "x"), float)
    assert C.coerce_field("hidden_sizes", "32,32", "x") == (32, 32)
    assert C.coerce_field("hidden_sizes", [8], "x") == (8,)
    for name, value, fragment in [("rb_size", "1000", "'1000'"), ("rb_size", 0, "integer >= 1"),
                                  ("gamma", float("nan"), "[0, 1]"), ("double_dqn", 1, "true or false"),
                                  ("kind", "dqn", "one of boot, bootrp, eps"), ("hidden_sizes", "24,x", "comma")]:
        with pytest.raises(ConfigError, match="^studies.s.hyperparameters." + name) as err:
            C.coerce_field(name, value, f"studies.s.hyperparameters.{name}")
        assert fragment in str(err.value) and "\n" not in str(err.value)


def test_traced_hyperparameters_are_generated_from_the_declarations():
    from deepsea_scaling.agent import Hyper, hyper_of

    traced = [f.name for f in C.FIELDS.values() if f.metadata["traced"] is True]
    assert traced == list(C.HYPER_FIELDS)
    flags = {name: C.FIELDS[name].metadata["flag"] for name in traced}
    assert list(Hyper.__dataclass_fields__) == [flags[name][0] if flags[name] else name for name in traced]
    for name, flag in flags.items():  # every traced choice is a named boolean, true for one named value
        if C.FIELDS[name].type == "str":
            assert flag and flag[1] in C.FIELDS[name].metadata["choices"], name
    assert {"mean_loss", "independent_target", "fixed_warmup_members"} <= set(Hyper.__dataclass_fields__)
    reference = hyper_of(TrainConfig(kind="boot", ensemble_size=4, fidelity="reference"))
    assert bool(reference.mean_loss) and bool(reference.independent_target) and bool(reference.fixed_warmup_members)
    default = hyper_of(TrainConfig(kind="boot", ensemble_size=4))
    assert not (bool(default.mean_loss) or bool(default.independent_target) or bool(default.fixed_warmup_members))
    assert set(C.TRACED_FIELDS) == set(traced) | {"base_seed"}
    hyper = hyper_of(TrainConfig(kind="boot", ensemble_size=4))
    assert float(hyper.prior_scale) == 0.0 and float(hyper.learning_rate) == pytest.approx(4 * 2e-4)


def test_kinds_are_one_table_that_config_reads():
    assert C.KINDS is KINDS and tuple(KINDS) == ("boot", "bootrp", "eps")  # one table, imported
    assert TrainConfig(kind="eps", ensemble_size=5).members == 1
    assert C.program_signature(TrainConfig(kind="boot")) == C.program_signature(TrainConfig(kind="bootrp"))
    cartpole = dict(env_name="CartPole-v1", num_env_steps=50_000, discovery_threshold=400.0)
    assert C.program_signature(TrainConfig(kind="boot", **cartpole)) != C.program_signature(TrainConfig(kind="bootrp", **cartpole))


# ------------------------------------------------------------ failed writes
@pytest.mark.slow
@pytest.mark.parametrize("failing", ["write_json", "write_table"])
def test_a_failed_write_leaves_neither_file_and_exits_in_one_line(tmp_path, monkeypatch, capsys, failing):
    from deepsea_scaling import io, train

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "shard.parquet"
    monkeypatch.setattr(io, failing, full_disk)
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()] + ["--seeds", "0:2", "--out", str(out), "--quiet"]
    with pytest.raises(SystemExit) as exit_:
        train.main(argv)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(out) in err[0] and "rerun" in err[0]
    assert not out.exists() and not io.sidecar_path(out).exists()
    assert not list(tmp_path.iterdir())  # no temporary file either


# ------------------------------------------------------- other environments
@pytest.mark.slow
def test_other_environment_trains_against_its_solved_return_labelled_by_name(tmp_path):
    """CartPole-v1 with DeepSea's default threshold: replaced by 475, said in the output,
    recorded in the row and the sidecar; the progress label names the environment, not n."""
    out = tmp_path / "cartpole.parquet"
    res, _ = cli("--env-name", "CartPole-v1", "--num-env-steps", str(24 * 40), "--rb-size", "240",
                 "--learning-starts", "120", "--num-log-points", "2", "--num-probe-states", "8",
                 "--ensemble-size", "2", "--seeds", "0:2", "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stderr
    assert "[bootrp K=2 CartPole-v1 seeds 0:2] note: discovery threshold 475" in res.stdout, res.stdout
    assert "n=10" not in res.stdout
    table = pd.read_parquet(out)
    assert (table["discovery_threshold"] == 475.0).all()
    assert not table["discovered"].any()  # 40 steps per env cannot balance the pole for 475
    assert "475" in json.loads(out.with_suffix(".json").read_text())["notes"][0]


@pytest.mark.parametrize("key, value, fragment", [
    ("discovery_threshold", 2.0, "(0, 0.99]"),
    ("discovery_threshold", -1.0, "(0, 0.99]"),
    ("discovery_threshold", float("nan"), "discovery_threshold"),
    ("weight_decay", float("nan"), "weight_decay"),
    ("learning_rate", float("inf"), "learning_rate"),
    ("learning_starts", 5000, "--learning-starts=5000 transitions / --num-envs=24) takes 209"),
])
def test_config_yaml_hyperparameters_are_refused_like_the_command_line(key, value, fragment):
    from deepsea_scaling import study

    spec = {"kinds": {"boot": {"ensemble_sizes": [2], "hardness": [4]}}, "seeds_per_cell": 2, "shard_size": 2,
            "num_episodes": 100, "hyperparameters": {"rb_size": 5000, "warmup": "inside", key: value}}
    with pytest.raises(ValueError) as err:
        study.load_study({"studies": {"s": spec}}, "s")
    message = str(err.value)
    named = "num_episodes" if key == "learning_starts" else f"studies.s.hyperparameters.{key}"  # the budget is short
    assert named in message and fragment in message and "\n" not in message
