"""reference.step evaluates in blocks of rows and columns, on two threads for large parameters; the
values must be bitwise those of the clauses evaluated on whole arrays (spec §4.2, CAME-DEF-1 … -3)."""
import numpy as np
import pytest

from came_conformance.reference import step as came_step


def whole_array_step(theta, grad, state, hp):
    """CAME-STEP-1 … CAME-STEP-12 on whole arrays, the order of operations of spec §4.2 (the plain form)."""
    factored = theta.ndim >= 2
    with np.errstate(all="ignore"):
        g = grad / hp.loss_scale
        q = g * g
        q += hp.eps1

        def f(row, col):
            return (1.0 / np.sqrt(row / np.mean(row, axis=-1, keepdims=True)))[..., :, None] * \
                (1.0 / np.sqrt(col))[..., None, :]

        out = {}
        if factored:
            r = hp.beta2 * state["exp_avg_sq_row"] + (1.0 - hp.beta2) * np.mean(q, axis=-1)
            c = hp.beta2 * state["exp_avg_sq_col"] + (1.0 - hp.beta2) * np.mean(q, axis=-2)
            out.update(exp_avg_sq_row=r, exp_avg_sq_col=c)
            u = f(r, c) * g
        else:
            v = np.asarray(hp.beta2 * state["exp_avg_sq"] + (1.0 - hp.beta2) * q)
            if hp.compression:
                v = v.astype(np.float16).astype(np.float64)
            out["exp_avg_sq"] = v
            u = g / np.sqrt(v)
        u_hat = u / np.maximum(1.0, np.sqrt(np.mean(u * u)) / hp.clip_threshold)
        m = hp.beta1 * state["exp_avg"]
        m += (1.0 - hp.beta1) * u_hat
        out["exp_avg"] = m
        if factored:
            d = u_hat - m
            d *= d
            d += hp.eps_insta
            big_r = hp.beta3 * state["exp_avg_insta_row"] + (1.0 - hp.beta3) * np.mean(d, axis=-1)
            big_c = hp.beta3 * state["exp_avg_insta_col"] + (1.0 - hp.beta3) * np.mean(d, axis=-2)
            out.update(exp_avg_insta_row=big_r, exp_avg_insta_col=big_c)
            direction = f(big_r, big_c) * m
        else:
            direction = m
        lr = hp.lr
        if hp.eps_scale is not None:
            lr = lr * np.maximum(hp.eps_scale, np.sqrt(np.mean(theta * theta)))
        decayed = theta - (lr * hp.weight_decay) * theta if hp.weight_decay != 0.0 else theta
        return decayed - lr * direction, out


def _bits(a):
    a = np.asarray(a, dtype=np.float64)
    return a.shape, a.view(np.uint64).tobytes()


SHAPES = [(), (1,), (7,), (1, 1), (3, 4), (1, 5), (5, 1), (2, 3, 4), (2, 1, 3, 2), (33, 129), (129, 1023),
          (3, 70, 91), (40_000,), (300, 1025)]


@pytest.mark.parametrize("blocks", ["default", "tiny"])
def test_blocked_evaluation_is_bitwise_the_whole_array_one(monkeypatch, blocks):
    if blocks == "tiny":  # every parameter of 256 elements or more is split, on two threads
        monkeypatch.setattr(came_step, "BLOCK", 64)
        monkeypatch.setattr(came_step, "PARALLEL_FROM", 256)
    rng = np.random.default_rng(11)
    for shape in SHAPES:
        for trial in range(4):
            theta = rng.standard_normal(shape)
            grad = rng.standard_normal(shape) * 10.0 ** int(rng.integers(-12, 4))
            if trial == 3 and grad.size > 2:
                grad.reshape(-1)[1] = np.nan
            state = {k: (rng.standard_normal(v.shape) if k == "exp_avg" else np.abs(rng.standard_normal(v.shape)))
                     for k, v in came_step.init_state(shape).items()}
            hp = came_step.StepHyper(lr=0.01, beta1=float(rng.choice([0.0, 0.9, 1.0])), beta2=0.999, beta3=0.9,
                                     eps1=1e-30, eps_insta=1e-16, clip_threshold=float(rng.choice([1.0, 1e-3])),
                                     weight_decay=float(rng.choice([0.0, 0.1])),
                                     eps_scale=1e-3 if trial % 2 else None, loss_scale=float(rng.choice([1.0, 3.0])),
                                     compression=bool(trial % 2))
            want_theta, want_state = whole_array_step(theta, grad, state, hp)
            for trace in (True, False):
                got = came_step.step(theta, grad, state, hp, trace=trace)
                assert _bits(got.theta) == _bits(want_theta), (shape, trial, trace)
                assert set(got.state) == set(want_state)
                for k in want_state:
                    assert _bits(got.state[k]) == _bits(want_state[k]), (shape, trial, trace, k)


def _two_thread_map_in_child(queue) -> None:
    done = []
    came_step.map_on_two_threads(done.append, range(4))
    queue.put(sorted(done))


def test_a_forked_child_does_not_wait_on_the_parents_pool_threads():
    """The mutation run forks its workers (ProcessPoolExecutor); a child inheriting the pool object
    without its threads would wait forever for the first block."""
    import multiprocessing

    import time

    came_step.map_on_two_threads(lambda _: time.sleep(0.1), range(4))  # busy tasks: both threads exist now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_two_thread_map_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, "the child hung on the parent's pool"
    assert queue.get(timeout=5) == [0, 1, 2, 3]
