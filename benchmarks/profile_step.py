"""Where a training step's time goes: each phase of the vector step timed alone, with the floor its bytes and FLOPs imply.

    python benchmarks/profile_step.py                                   # the engine issue's two cells, reference mode
    python benchmarks/profile_step.py --cell boot:8:11 --seeds 32 --fidelity default
    python benchmarks/profile_step.py --cpu-devices 1                   # one XLA thread pool device (as a one-core job)

For each cell (kind:K:n) it builds the engine's own functions (engine.Trainer,
agent.Agent) for `--seeds` runs, fills the replay buffer as training would,
then compiles one program per phase of the learning vector step, each looped
`--steps` times inside the program and vmapped over the runs exactly as the
engine vmaps them:

    rng draw         one split and the step's uint32 bits
    acting           Q of each env's acting member (prior included) and the greedy action
    env step         DeepSea's vmapped step with auto-reset
    replay insert    the 24 new transitions written to the circular buffer
    replay sample    K x 64 slots gathered from the buffer
    bookkeeping      the episodes that ended: returns, first discoveries, divergence
    TD loss fwd      the loss alone (online and target Q on the minibatches)
    TD loss fwd+bwd  the loss and its gradients
    optimiser        AdamW's update of the online parameters and apply_updates
    target/decay     hard target update every target_period steps (reference mode:
                     AdamW's decay of the prior and the targets, every step)
    whole step       Trainer.learn_step itself (what training runs)

It prints milliseconds per vector step for each (all runs together), their
sum against the whole step (XLA fuses across phases, so the sum is an upper
bound; fusion can also make the whole step dearer than its parts), XLA's
count of FLOPs for one whole step (`compiled.cost_analysis()`), the bytes of
state a step must read and write (parameters, AdamW's moments, prior, targets,
gradients), this machine's measured streaming bandwidth and small-matmul rate,
and the floor these imply: max(bytes / bandwidth, FLOPs / rate). The CPU
model is printed beside every figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow"))

DEFAULT_CELLS = ["boot:8:11", "bootrp:8:18"]


def parse_cell(text: str) -> tuple[str, int, int]:
    try:
        kind, k, n = text.split(":")
        return kind, int(k), int(n)
    except ValueError:
        raise SystemExit(f"--cell={text} is invalid: write kind:K:n, e.g. boot:8:11") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", action="append", help=f"kind:K:n (repeatable; default {' '.join(DEFAULT_CELLS)})")
    parser.add_argument("--seeds", type=int, default=32, help="runs vmapped together (default 32)")
    parser.add_argument("--fidelity", default="reference", choices=["reference", "default"])
    parser.add_argument("--steps", type=int, default=1000, help="vector steps each phase is looped (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per phase; the best is kept (default 3)")
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="XLA CPU devices (0: leave JAX's default); the runs are not split over them here")
    args = parser.parse_args()
    cells = [parse_cell(c) for c in (args.cell or DEFAULT_CELLS)]
    if args.seeds < 1 or args.steps < 1 or args.repeats < 1:
        raise SystemExit("--seeds, --steps and --repeats must be positive integers")
    if args.cpu_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.cpu_devices}").strip()

    import jax

    from deepsea_scaling.io import cpu_model

    machine = f"{cpu_model()}, {os.cpu_count()} logical CPUs, JAX {jax.__version__} {jax.default_backend()}"
    print(f"machine: {machine}")
    bandwidth, rate = machine_rates()
    print(f"measured: memory bandwidth {bandwidth / 1e9:.1f} GB/s (copy-scale of a 256 MiB float32 array, "
          f"read + write counted), matmul {rate / 1e9:.1f} GFLOP/s (batched 64x24 @ 24x24, as the TD loss's)")
    for kind, k, n in cells:
        profile_cell(kind, k, n, args.seeds, args.fidelity, args.steps, args.repeats, bandwidth, rate)


def machine_rates() -> tuple[float, float]:
    """(bytes per second of a streaming elementwise pass, FLOP/s of small batched matmuls), both measured."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((64 * 2**20,), jnp.float32)
    scale = jax.jit(lambda a: a * 1.0000001)
    scale(x).block_until_ready()
    best = min(_timed(lambda: scale(x).block_until_ready()) for _ in range(5))
    bandwidth = 2 * x.nbytes / best

    a = jnp.ones((4096, 64, 24), jnp.float32)
    b = jnp.ones((4096, 24, 24), jnp.float32)
    mm = jax.jit(lambda a, b: jnp.einsum("rbi,rij->rbj", a, b))
    mm(a, b).block_until_ready()
    best = min(_timed(lambda: mm(a, b).block_until_ready()) for _ in range(5))
    return bandwidth, 2 * 4096 * 64 * 24 * 24 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def profile_cell(kind: str, k: int, n: int, seeds: int, fidelity: str, steps: int, repeats: int,
                 bandwidth: float, rate: float) -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from deepsea_scaling import agent as agent_lib
    from deepsea_scaling.config import TrainConfig
    from deepsea_scaling import engine
    from deepsea_scaling.engine import default_hyper, make_train, seed_keys
    from deepsea_scaling.metrics import record_episodes
    from deepsea_scaling.replay import Transition, replay_add, replay_sample_bits

    config = TrainConfig(kind=kind, ensemble_size=k, hardness=n, num_episodes=15000, fidelity=fidelity)
    trainer = make_train(config)
    ag, env, cfg = trainer.agent, trainer.env, trainer.config
    hyper = default_hyper(config)
    # as the engine compiles one cell: its choices (and boot's prior scale of 0) are constants
    hyper = hyper.replace(**engine._uniform_choices(hyper, jax.tree.map(lambda _: None, hyper)))
    keys = seed_keys(config, range(seeds))

    # a state as learning finds it: initialised, the buffer filled by the warm-up
    state = jax.jit(jax.vmap(lambda key: trainer.init(key, hyper)))(keys)  # hyper's constants stay constants
    warm = jax.jit(jax.vmap(lambda s: jax.lax.fori_loop(
        0, trainer.learn_start, lambda t, s: trainer.act_step(s, t, hyper), s)))
    state = warm(state)
    t0 = jnp.int32(trainer.learn_start)
    members, batch_size, num_envs = ag.members, cfg.batch_size, cfg.num_envs

    def draw(s, t):
        return trainer.draw(s.rng, learning=True)

    def one_batch(s, t):
        bits = jax.random.bits(jax.random.fold_in(s.rng, t), (members, batch_size), jnp.uint32)
        return replay_sample_bits(s.buffer, bits)

    def td_inputs(s, batch):
        return ag.td_inputs(s.params, s.prior, s.target, batch, hyper)

    def loss_and_grads(s, batch):  # the first half of Agent.update: the TD loss and its gradients
        return jax.value_and_grad(agent_lib.td_loss, has_aux=True)(s.params, ag.network, batch, *td_inputs(s, batch), hyper)

    grads_example = jax.jit(jax.vmap(lambda s: loss_and_grads(s, one_batch(s, t0))[1]))(state)

    # each phase: (state, t, carry) -> (state, carry); `carry` is a float32 the phase's output is
    # folded into, so XLA cannot drop the work; the state changes only where the phase owns it
    def phase_draw(s, t, c):
        rng, _, bits = draw(s, t)
        return s.replace(rng=rng), c + bits[0].astype(jnp.float32)

    def phase_act(s, t, c):
        q = ag.q_acting(s.params, s.prior, s.obs, s.active, hyper)
        bits = jax.random.bits(jax.random.fold_in(s.rng, t), (trainer.act_draws,), jnp.uint32)
        action = ag.act(q, jnp.float32(0.1), bits)
        return s, c + jnp.sum(action).astype(jnp.float32)

    def phase_env(s, t, c):
        action = ((jnp.arange(num_envs) + t) % env.num_actions).astype(jnp.int32)
        next_obs, env_state, reward, terminated, done, final_obs = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
            env.step_keys(s.rng, num_envs), s.env_state, action, s.env_params)
        return s.replace(env_state=env_state, obs=next_obs), c + jnp.sum(reward)

    def phase_insert(s, t, c):
        action = (jnp.arange(num_envs) % env.num_actions).astype(jnp.int32)
        reward = jnp.zeros((num_envs,), jnp.float32) + t.astype(jnp.float32)
        return s.replace(buffer=replay_add(s.buffer, Transition(s.obs, action, reward, s.obs, reward))), c

    def phase_sample(s, t, c):
        batch = one_batch(s, t)
        return s, c + jnp.sum(batch.reward) + jnp.sum(batch.action).astype(jnp.float32)

    def phase_bookkeeping(s, t, c):
        done = ((jnp.arange(num_envs) + t) % n) == 0
        episode_return = s.episode_return + jnp.float32(0.01)
        tracker = record_episodes(s.tracker, done, episode_return, s.active, hyper.discovery_threshold, t > 0)
        tracker = tracker.replace(diverged=tracker.diverged | ~jnp.isfinite(c))
        return s.replace(tracker=tracker, episode_return=jnp.where(done, 0.0, episode_return),
                         active=jnp.where(done, ag.new_members(jnp.full((num_envs,), t, jnp.uint32), num_envs),
                                          s.active)), c

    def phase_loss(s, t, c):
        batch = one_batch(s, t)
        loss, _ = agent_lib.td_loss(s.params, ag.network, batch, *td_inputs(s, batch), hyper)
        return s, c + loss

    def phase_grads(s, t, c):
        (loss, _), grads = loss_and_grads(s, one_batch(s, t))
        return s, c + loss + jnp.sum(grads["params"][sorted(grads["params"])[-1]]["bias"])

    def phase_optimiser(s, t, c, grads):
        updates, opt_state = ag.optimizer(hyper).update(grads, s.opt_state, s.params)
        return s.replace(params=optax.apply_updates(s.params, updates), opt_state=opt_state), c

    def phase_target(s, t, c):  # the agent's own target update (and, decay_scope=all, decay)
        due = (t - trainer.learn_start + 1) % hyper.target_period == 0
        prior, target = ag.target_form.update(ag, s.params, s.prior, s.target, due, hyper)
        return s.replace(prior=prior, target=target), c

    def phase_whole(s, t, c):
        return trainer.learn_step(s, t, hyper), c

    phases = {
        "rng draw": phase_draw,
        "acting": phase_act,
        "env step": phase_env,
        "replay insert": phase_insert,
        "replay sample": phase_sample,
        "bookkeeping": phase_bookkeeping,
        "TD loss fwd": phase_loss,
        "TD loss fwd+bwd": phase_grads,
        "optimiser": phase_optimiser,
        "target/decay": phase_target,
        "whole step": phase_whole,
    }
    prior_form = type(ag.prior_form).__name__ if ag.adds_prior(hyper) else "none: scaled by 0, not built"
    print(f"\n{kind} K={k} n={n}, {seeds} runs, {fidelity} mode (prior {prior_form}, "
          f"target {type(ag.target_form).__name__}); {steps} steps per timing, best of {repeats}")
    print(f"{'phase':<18}{'ms/step':>10}{'share':>8}")
    times = {}
    for name, fn in phases.items():
        if name == "optimiser":
            def looped(s, g, fn=fn):
                return jax.lax.fori_loop(0, steps, lambda i, sc: fn(sc[0], t0 + i, sc[1], g), (s, jnp.float32(0)))
            program = jax.jit(jax.vmap(looped))
            call_args = (state, grads_example)
        else:
            def looped(s, fn=fn):
                return jax.lax.fori_loop(0, steps, lambda i, sc: fn(sc[0], t0 + i, sc[1]), (s, jnp.float32(0)))
            program = jax.jit(jax.vmap(looped))
            call_args = (state,)
        compiled = program.lower(*call_args).compile()
        jax.block_until_ready(compiled(*call_args))
        best = min(_timed(lambda: jax.block_until_ready(compiled(*call_args))) for _ in range(repeats))
        times[name] = best / steps
    whole = times["whole step"]
    for name, seconds in times.items():
        share = "" if name == "whole step" else f"{seconds / whole:7.0%}"
        print(f"{name:<18}{seconds * 1e3:10.3f}{share:>8}")
    parts = sum(v for name, v in times.items() if name not in ("whole step", "TD loss fwd"))
    print(f"{'sum of phases':<18}{parts * 1e3:10.3f}{parts / whole:7.0%}   (TD loss fwd left out: inside fwd+bwd)")

    # XLA's count for one whole step (no loop), all runs: an upper bound on traffic (every operand of
    # every op is counted, fused or in cache); the essential traffic is the state each step must read
    # and write: online parameters, AdamW's moments, the prior and targets, and the gradients
    one = jax.jit(jax.vmap(lambda s: trainer.learn_step(s, t0, hyper))).lower(state).compile()
    cost = one.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops, xla_bytes = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))

    def nbytes(tree):
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))

    touched = nbytes(state.params) + nbytes(state.opt_state) + nbytes(state.prior) + nbytes(state.target)
    essential = 2 * touched + 2 * nbytes(state.params)  # read + write each, gradients written and read
    params = sum(x.size for x in jax.tree.leaves(state.params)) // seeds
    memory_floor, arithmetic_floor = essential / bandwidth, flops / rate
    floor = max(memory_floor, arithmetic_floor)
    print(f"one whole step, {seeds} runs: {flops / 1e6:.1f} MFLOP (XLA), {essential / 1e6:.1f} MB of state read and "
          f"written (XLA counts {xla_bytes / 1e6:.1f} MB of operands); {params:,} online parameters per run")
    print(f"floor: max({memory_floor * 1e3:.3f} ms of state traffic at the streaming bandwidth, "
          f"{arithmetic_floor * 1e3:.3f} ms of arithmetic at the small-matmul rate) = {floor * 1e3:.3f} ms per step; "
          f"whole step measured {whole * 1e3:.3f} ms ({whole / floor:.1f}x the floor)")

if __name__ == "__main__":
    main()
