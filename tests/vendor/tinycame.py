"""A tiny NumPy CAME written the way a vendor writes a port (tests/test_vendor.py plays the vendor).

Paper profile and constructor (spec/came.md CAME-HP-2, §6 for its errors), float64 arithmetic,
parameters kept in their own dtype.  One deliberate difference, declared in the vendor's
deviations file: weight decay is not multiplied by the learning rate (θ ← θ − λ·θ, where
CAME-STEP-11 has θ ← θ − η·λ·θ).  It lives outside the suite's packages on purpose: the test
copies it into an empty directory.
"""
import math

import numpy as np

STATE = ("exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_res_row", "exp_avg_res_col")


def _float(name, value, exc=TypeError):
    if not isinstance(value, float):
        raise exc(f"{name} must be a float, got {value!r}")
    return value


def _finite(name, value, low, strict):
    if not (math.isfinite(value) and (value > low if strict else value >= low)):
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {low}, got {value!r}")
    return value


def _real(p):
    if isinstance(p, np.ma.MaskedArray) or p.dtype.kind != "f" or p.dtype.itemsize > 8:
        raise TypeError(f"params: every parameter must hold real floating-point values, got {p.dtype}")
    return p


def _lr(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"lr must be an int or a float, got {value!r}")
    return _finite("lr", float(value), 0.0, strict=False)


def _weight_decay(value):
    return _finite("weight_decay", _float("weight_decay", value), 0.0, strict=False)


class CAME:
    def __init__(self, params, lr=None, eps=(1e-30, 1e-16), clip_threshold=1.0, betas=(0.9, 0.999, 0.9999),
                 weight_decay=0.0):
        if isinstance(params, (str, bytes, dict, np.ndarray)) or not hasattr(params, "__iter__"):
            raise TypeError(f"params must be an iterable of arrays or of group dicts, got {type(params).__name__}")
        params = list(params)  # a generator too (CAME-ERR-28)
        if any(isinstance(p, dict) for p in params) and not all(isinstance(p, dict) for p in params):
            raise TypeError("params must hold arrays or group dicts, not a mix of both (CAME-ERR-27)")
        groups, bare = [], []
        for item in params:
            if isinstance(item, np.ndarray):
                bare.append(_real(item))
            elif isinstance(item, dict):
                members = item.get("params")
                if isinstance(members, (str, bytes, dict, np.ndarray)) or not hasattr(members, "__iter__"):
                    raise TypeError("params: a group's 'params' must be an iterable of arrays")
                members = list(members)
                if not all(isinstance(p, np.ndarray) for p in members):
                    raise TypeError("params: a group's 'params' must hold arrays only")
                if not members:
                    raise ValueError("params: a group must hold at least one array")
                group = {"params": [_real(p) for p in members]}
                if "lr" in item:
                    group["lr"] = _lr(item["lr"])
                if "weight_decay" in item:
                    group["weight_decay"] = _weight_decay(item["weight_decay"])
                groups.append(group)
            else:
                raise TypeError(f"params: every element must be an array or a group dict, got {item!r}")
        if bare:
            groups.insert(0, {"params": bare})
        if not groups:
            raise ValueError("params must hold at least one array")
        if not isinstance(eps, (list, tuple)):
            raise TypeError(f"eps must be a list or tuple of floats, got {eps!r}")
        if len(eps) != 2:
            raise ValueError(f"eps must have 2 values, got {eps!r}")
        self.eps = [_finite("eps", _float("eps", e), 0.0, strict=True) for e in eps]
        self.clip = _finite("clip_threshold", _float("clip_threshold", clip_threshold), 0.0, strict=True)
        if not isinstance(betas, (list, tuple)):
            raise TypeError(f"betas must be a tuple of 3 floats, got {betas!r}")
        if len(betas) != 3:
            raise ValueError(f"betas must have 3 values, got {betas!r}")
        for b in betas:
            if not 0.0 <= _float("betas", b) <= 1.0:
                raise ValueError(f"betas must be in [0.0, 1.0], got {betas!r}")
        self.betas = tuple(betas)
        lr, weight_decay = _lr(lr), _weight_decay(weight_decay)
        for group in groups:
            group.setdefault("lr", lr)
            group.setdefault("weight_decay", weight_decay)
        self.param_groups = groups
        self.params = [p for g in groups for p in g["params"]]
        self.state = {}

    def step(self, gradients):
        if not isinstance(gradients, (list, tuple)):
            raise TypeError(f"gradients must be a list of arrays, got {type(gradients).__name__}")
        if len(gradients) != len(self.params):
            raise ValueError(f"gradients: expected {len(self.params)}, one per parameter, got {len(gradients)}")
        for g, p in zip(gradients, self.params):
            if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
                raise TypeError(f"gradients must be real floating-point arrays, got {getattr(g, 'dtype', g)!r}")
            if g.shape != p.shape:
                raise ValueError(f"gradients: shape {g.shape} differs from its parameter's {p.shape}")
        k = 0
        for group in self.param_groups:
            for p in group["params"]:
                self._update(k, p, gradients[k].astype(np.float64), group["lr"], group["weight_decay"])
                k += 1

    def _update(self, k, p, g, lr, weight_decay):
        b1, b2, b3 = self.betas
        eps1, eps2 = self.eps
        factored = p.ndim >= 2
        if k not in self.state:
            self.state[k] = {"exp_avg": np.zeros(p.shape)}
            if factored:
                for name, shape in (("row", p.shape[:-1]), ("col", p.shape[:-2] + p.shape[-1:])):
                    self.state[k][f"exp_avg_sq_{name}"] = np.zeros(shape)
                    self.state[k][f"exp_avg_res_{name}"] = np.zeros(shape)
            else:
                self.state[k]["exp_avg_sq"] = np.zeros(p.shape)
        if p.size == 0:
            return
        s, theta = self.state[k], p.astype(np.float64)
        q = g * g + eps1
        if factored:
            s["exp_avg_sq_row"] = b2 * s["exp_avg_sq_row"] + (1 - b2) * q.mean(axis=-1)
            s["exp_avg_sq_col"] = b2 * s["exp_avg_sq_col"] + (1 - b2) * q.mean(axis=-2)
            u = _approx(s["exp_avg_sq_row"], s["exp_avg_sq_col"]) * g
        else:
            s["exp_avg_sq"] = np.asarray(b2 * s["exp_avg_sq"] + (1 - b2) * q)
            u = g / np.sqrt(s["exp_avg_sq"])
        u = u / np.maximum(1.0, np.sqrt(np.mean(u * u)) / self.clip)  # NaN propagates (CAME-NONFINITE-1)
        s["exp_avg"] = b1 * s["exp_avg"] + (1 - b1) * u
        direction = s["exp_avg"]
        if factored:
            res = (u - s["exp_avg"]) ** 2 + eps2
            s["exp_avg_res_row"] = b3 * s["exp_avg_res_row"] + (1 - b3) * res.mean(axis=-1)
            s["exp_avg_res_col"] = b3 * s["exp_avg_res_col"] + (1 - b3) * res.mean(axis=-2)
            direction = _approx(s["exp_avg_res_row"], s["exp_avg_res_col"]) * s["exp_avg"]
        if weight_decay != 0.0:
            theta = theta - weight_decay * theta  # the deliberate difference: not times lr
        p[...] = theta - lr * direction


def _approx(row, col):
    r = 1.0 / np.sqrt(row / row.mean(axis=-1, keepdims=True))
    return r[..., :, None] * (1.0 / np.sqrt(col))[..., None, :]
