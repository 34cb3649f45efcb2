"""Target ``colossalai-dist``: ColossalAI 0.5.0's ``DistributedCAME`` on real gloo ranks (spec §9).

Every layout is set up the way ColossalAI's own plugins set it up, and every step is ColossalAI's
own ``DistributedCAME.step``; what each variant does around it:

- ``replicated-w*`` (data parallel, HybridParallelPlugin with zero_stage=0): every rank holds the
  whole parameter, ``setup_distributed(tp_group=None, dp_group=WORLD, use_zero=False)``;
- ``rows-w*`` / ``cols-w*`` (tensor parallel, HybridParallelPlugin with tp_size = world): a split
  parameter is a ColossalAI d_tensor made by ``distribute_tensor`` with the split axis sharded
  (``Linear1D_Col`` weights are split by rows, ``Linear1D_Row`` weights by columns), a replicated
  one a plain tensor; ``setup_distributed(tp_group=WORLD, dp_group=None, use_zero=False)``.
  ColossalAI refuses axes not divisible by the world size (ShardingNotDivisibleError): not applicable;
- ``zero-w*`` (ZeRO, LowLevelZeroPlugin): ``LowLevelZeroOptimizer`` refuses to run without CUDA or
  NPU (``_sanity_checks``: ``assert get_accelerator().name in ["cuda", "npu"]``), so this adapter
  **reproduces its sharding** from ``low_level_optim.py`` (``_ZeroPartition``, about 30 lines):
  padding (world - numel % world) % world, the padded flat parameter split into equal pieces,
  rank k's piece as the optimizer's parameter (``master_weights=False``: the piece is a view of the
  working parameter, in its dtype), its gradient the piece of the averaged flat gradient (padding
  zero), and after the step the pieces all-gathered back into the working parameter; then
  ``setup_distributed(None, WORLD, master_to_working, padding_map, use_zero=world > 1)`` exactly as
  ``LowLevelZeroPlugin.configure`` calls it.

``read`` reports each rank's own view: the working parameters (ColossalAI's ``to_global`` for
d_tensors), and the state under the spec's names, pieces all-gathered where ColossalAI keeps a
piece and the rank's own copy where it keeps a whole statistic.  ``shards`` reports each rank's
piece of θ and of exp_avg / exp_avg_sq.  Findings: targets/colossalai-dist/investigation.md.
"""
from __future__ import annotations

import numpy as np
import torch

from came_conformance.adapters import torch_base as common
from came_conformance.adapters.colossalai import versions
from came_conformance.distributed import layout as lay
from came_conformance.protocol import NotApplicable, Snapshot, TargetInfo
from came_conformance.reference.step import init_state

VARIANTS = ("replicated-w2", "zero-w2", "rows-w2", "cols-w2", "zero-w4", "rows-w4", "cols-w4")
SPEC_NAMES = {v: k for k, v in common.STATE_NAMES.items()}  # spec name -> ColossalAI's


def _f64(t) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def _gather(array: np.ndarray) -> list:
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, array)
    return out


class _ZeroPartition:
    """LowLevelZeroOptimizer._create_master_param_current_rank and its all-gather, master_weights=False."""

    def __init__(self, working: torch.Tensor, world: int, rank: int):
        self.working, self.world = working, world
        self.padding = (world - working.numel() % world) % world
        with torch.no_grad():
            if self.padding > 0:
                self.padded = torch.nn.functional.pad(working.data.view(-1), [0, self.padding])
                working.data = self.padded[: working.numel()].view(working.shape)
            else:
                self.padded = working.data.view(-1)
        # an empty parameter: LowLevelZero's split(0) gives fewer pieces than ranks (IndexError on rank >= 1);
        # every rank takes the empty piece here, so that what is judged is DistributedCAME's step
        pieces = self.padded.split(self.padded.numel() // world) if self.padded.numel() else [self.padded] * world
        self.master = torch.nn.Parameter(pieces[rank])

    def all_gather(self) -> None:
        import torch.distributed as dist

        pieces = [torch.empty_like(self.master.data) for _ in range(self.world)]
        dist.all_gather(pieces, self.master.data.contiguous())
        with torch.no_grad():
            self.working.data.copy_(torch.cat(pieces)[: self.working.numel()].view_as(self.working))


class Session(common.TorchSession):
    """One rank's DistributedCAME over the pieces this rank's layout gives it."""

    def __init__(self, optim, tensors, hp, owners, places, zero: list, dtensors: list):
        super().__init__(optim, tensors, hp, owners)
        self.places, self.zero, self.dtensors = places, zero, dtensors

    def step(self, grads) -> None:
        super().step(grads)
        for partition in self.zero:
            if partition is not None:
                partition.all_gather()

    def _full_param(self, i: int) -> np.ndarray:
        from colossalai.tensor.d_tensor.api import to_global

        if self.zero[i] is not None:
            return _f64(self.zero[i].working)
        if self.dtensors[i]:
            return _f64(to_global(self.tensors[i]))
        return _f64(self.tensors[i])

    def _full_state(self, i: int, place) -> dict:
        raw = self.optim.state.get(self.tensors[i], {})
        out = {}
        for name, want in init_state(place.shape).items():
            if SPEC_NAMES[name] not in raw:
                out[name] = want
                continue
            local = _f64(raw[SPEC_NAMES[name]])
            kind = lay.state_layout(place.layout, place.shape, name)
            if kind == "zero":  # exp_avg, exp_avg_sq: flat pieces, padding dropped
                out[name] = lay.assemble(_gather(local), "zero", want.shape)
            elif place.layout == "zero" and local.shape != want.shape and name.endswith("_row"):
                # ColossalAI keeps rows [k·H/w, (k+1)·H/w) of the row statistics when w divides H
                out[name] = np.concatenate(_gather(local), axis=-1)
            elif kind == "replicated":
                out[name] = local  # a whole statistic: this rank's own copy
            else:  # a tensor-parallel piece
                out[name] = lay.assemble(_gather(local), kind, want.shape)
        return out

    def read(self) -> Snapshot:
        params = [self._full_param(i) for i in range(len(self.tensors))]
        states = [self._full_state(i, place) for i, place in enumerate(self.places)]
        return Snapshot(params, states, self.target_step())

    def shards(self) -> list[dict]:
        out = []
        for p in self.tensors:
            raw = self.optim.state.get(p, {})
            out.append({"theta": _f64(p), **{name: _f64(raw[name]) for name in ("exp_avg", "exp_avg_sq") if name in raw}})
        return out

    def target_step(self) -> int | None:
        steps = [self.optim.state[p]["step"] for p in self.tensors if "step" in self.optim.state.get(p, {})]
        return int(steps[0]) if steps else 0


class _Replicated(common.TorchSession):
    """A constructor-made session: every rank holds everything (the replicated layout)."""

    def shards(self) -> list[dict]:
        snap = self.read()
        return [{"theta": p, **s} for p, s in zip(snap.params, snap.state)]


class ColossalAIDistAdapter:
    def describe(self) -> TargetInfo:
        return TargetInfo(name="colossalai-dist", profile="paper", api="paper", versions=versions(),
                          dtypes=("float64", "float32", "float16", "bfloat16"), variants=VARIANTS,
                          options=common.OPTIONS - {"save_restore", "open_at"}, world_sizes=(2, 4),
                          # the sharded RMS adds the ranks' partial sums of cascade sums: lanes:8's depth covers both
                          precision=common.precision(("float64", "float32", "float16", "bfloat16")))

    def native(self):
        return common.Hooks()

    def open(self, hp, params, dtype, variant, sharding=None):
        import torch.distributed as dist
        from colossalai.device.device_mesh import DeviceMesh
        from colossalai.nn.optimizer import DistributedCAME
        from colossalai.tensor.d_tensor.api import distribute_tensor, sharded_tensor_to_param
        from colossalai.tensor.d_tensor.sharding_spec import ShardingSpec

        if sharding is None:
            raise NotApplicable("a sharded target runs under the rank harness (conformance.distributed)")
        common.check_paper(hp)
        mode, world = lay.parse_variant(variant)
        rank = sharding["rank"]
        places = [_Place(tuple(np.shape(p)), layout) for p, layout in zip(params, sharding["layouts"])]
        working = common.make_tensors(params, dtype)
        tensors, zero, dtensors = [], [], []
        for place, w in zip(places, working):
            lay.check_layout(place.layout, place.shape)
            zero.append(None)
            dtensors.append(False)
            if place.layout == "zero":
                zero[-1] = _ZeroPartition(w, world, rank)
                tensors.append(zero[-1].master)
            elif place.layout in ("rows", "cols"):
                axis = lay.split_axis(place.layout, len(place.shape))
                spec = ShardingSpec(dim_size=len(place.shape), dim_partition_dict={axis: [0]})
                mesh = DeviceMesh.from_process_group(dist.GroupMember.WORLD)
                try:
                    dtensor = distribute_tensor(w.detach().clone(), mesh, spec)
                except Exception as exc:  # noqa: BLE001 - ColossalAI's own refusal of the layout
                    raise NotApplicable(f"ColossalAI cannot shard shape {place.shape} {place.layout}-wise over "
                                        f"{world} ranks: {type(exc).__name__}: {exc}") from exc
                tensors.append(sharded_tensor_to_param(dtensor))
                dtensors[-1] = True
            else:
                tensors.append(w)
        groups, owners = common.param_groups(hp, tensors)
        optim = DistributedCAME(groups, lr=common.initial_lr(hp), eps=(hp.eps1, hp.eps_insta),
                                clip_threshold=hp.clip_threshold, betas=(hp.beta1, hp.beta2, hp.beta3),
                                weight_decay=hp.weight_decay)
        if mode == "zero":  # LowLevelZeroPlugin.configure
            master_to_working = {id(z.master): z.working for z in zero if z is not None}
            padding_map = {id(z.working): z.padding for z in zero if z is not None}
            optim.setup_distributed(None, dist.GroupMember.WORLD, master_to_working, padding_map, world > 1)
        elif mode in ("rows", "cols"):  # HybridParallelPlugin, tp_size = world, zero_stage = 0
            optim.setup_distributed(dist.GroupMember.WORLD, None, {}, None, False)
        else:  # HybridParallelPlugin, tp_size = 1, zero_stage = 0: plain data parallel
            optim.setup_distributed(None, dist.GroupMember.WORLD, {}, None, False)
        return Session(optim, tensors, hp, owners, places, zero, dtensors)

    def construct(self, kwargs, variant) -> _Replicated:
        """The constructor as documented, then set up as data parallel (every rank holds everything)."""
        import torch.distributed as dist
        from colossalai.nn.optimizer import DistributedCAME

        optim = DistributedCAME(**kwargs)
        optim.setup_distributed(None, dist.GroupMember.WORLD, {}, None, False)
        return _Replicated(optim, common.constructed_tensors(optim))


class _Place:
    def __init__(self, shape, layout):
        self.shape, self.layout = shape, layout


def factory() -> ColossalAIDistAdapter:
    return ColossalAIDistAdapter()
