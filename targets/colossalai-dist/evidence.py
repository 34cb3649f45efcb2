"""Evidence for targets/colossalai-dist/deviations.json: ColossalAI 0.5.0's DistributedCAME on gloo ranks.

Run from the repository root:  PYTHONPATH=. .venvs/colossalai/bin/python targets/colossalai-dist/evidence.py
It starts 2 (and 4) ranks on 127.0.0.1 with torch.multiprocessing, sets DistributedCAME up as
ColossalAI's plugins do, and prints, next to each result, the reference's
(came_conformance.reference) value for the same full parameter and gradient.
"""
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.reference.optimizer import trajectory

LR = 0.1


def reference(shape, grads):
    hp = Hyperparameters.defaults("paper", learning_rate=LearningRate.constant(LR))
    return trajectory([np.ones(shape)], [[g] for g in grads], hp)


def grads_for(shape, steps):
    rng = np.random.default_rng(7)
    return [rng.standard_normal(shape) for _ in range(steps)]


def show(rank, *args):
    if rank == 0:
        print(*args, flush=True)


def replicated(rank, shape, steps, dtype=torch.float64, grads=None):
    from colossalai.nn.optimizer import DistributedCAME

    p = torch.nn.Parameter(torch.ones(shape, dtype=dtype))
    opt = DistributedCAME([p], lr=LR)
    opt.setup_distributed(None, dist.GroupMember.WORLD, {}, None, False)  # HybridParallelPlugin, tp=1, zero=0
    for g in grads or grads_for(shape, steps):
        p.grad = torch.tensor(g, dtype=dtype)
        opt.step()
    return p, opt.state[p]


def zero(rank, world, shape, steps):
    """LowLevelZeroOptimizer's partition (low_level_optim.py), master_weights=False, and LowLevelZeroPlugin's setup."""
    from colossalai.nn.optimizer import DistributedCAME

    working = torch.nn.Parameter(torch.ones(shape, dtype=torch.float64))
    pad = (world - working.numel() % world) % world
    flat = torch.nn.functional.pad(working.data.view(-1), [0, pad])
    # an empty parameter: split(0) gives fewer pieces than ranks, so every rank takes the empty one (as the adapter)
    master = torch.nn.Parameter((flat.split(flat.numel() // world) if flat.numel() else [flat] * world)[rank])
    opt = DistributedCAME([master], lr=LR)
    opt.setup_distributed(None, dist.GroupMember.WORLD, {id(master): working}, {id(working): pad}, world > 1)
    for g in grads_for(shape, steps):
        gflat = torch.nn.functional.pad(torch.tensor(g).reshape(-1), [0, pad])
        master.grad = (gflat.split(gflat.numel() // world) if gflat.numel() else [gflat] * world)[rank].clone()
        opt.step()
    return opt.state[master]


def tensor_parallel(rank, world, shape, axis, steps):
    """HybridParallelPlugin with tp_size = world: a d_tensor split along ``axis``."""
    from colossalai.device.device_mesh import DeviceMesh
    from colossalai.nn.optimizer import DistributedCAME
    from colossalai.tensor.d_tensor.api import distribute_tensor, sharded_tensor_to_param, to_global
    from colossalai.tensor.d_tensor.sharding_spec import ShardingSpec

    mesh = DeviceMesh.from_process_group(dist.GroupMember.WORLD)
    spec = ShardingSpec(dim_size=len(shape), dim_partition_dict={axis: [0]})
    p = sharded_tensor_to_param(distribute_tensor(torch.ones(shape, dtype=torch.float64), mesh, spec))
    opt = DistributedCAME([p], lr=LR)
    opt.setup_distributed(dist.GroupMember.WORLD, None, {}, None, False)
    for g in grads_for(shape, steps):
        p.grad = torch.tensor(g).chunk(world, dim=axis)[rank].contiguous()
        opt.step()
    return to_global(p), opt.state[p]


def main(rank, world, port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    show(rank, f"# {world} ranks")
    if world == 2:
        show(rank, "## DC-VECTOR-EXP-AVG-LR: a 1-D parameter (4,), one step, data parallel")
        p, state = replicated(rank, (4,), 1)
        ref = reference((4,), grads_for((4,), 1))[-1]
        show(rank, "  DistributedCAME exp_avg:", np.round(state["exp_avg"].numpy(), 6).tolist())
        show(rank, "  reference exp_avg:      ", np.round(ref.state.tensors[0]["exp_avg"], 6).tolist(), f"(ratio = lr = {LR})")
        show(rank, "  theta equal to the reference's:", np.allclose(p.detach().numpy(), ref.params[0], rtol=1e-12))
        show(rank, "## DC-INSTA-ALIAS: a matrix (3, 4), two steps, data parallel")
        p, state = replicated(rank, (3, 4), 1)
        show(rank, "  after step 1: exp_avg_res_row is exp_avg_sq_row:", state["exp_avg_res_row"] is state["exp_avg_sq_row"])
        p, state = replicated(rank, (3, 4), 2)
        ref = reference((3, 4), grads_for((3, 4), 2))
        show(rank, "  after step 2: exp_avg_res_row is exp_avg_sq_row:", state["exp_avg_res_row"] is state["exp_avg_sq_row"])
        show(rank, "  step 2 exp_avg_sq_row:", np.round(state["exp_avg_sq_row"].numpy(), 6).tolist(),
             " reference:", np.round(ref[1].state.tensors[0]["exp_avg_sq_row"], 6).tolist())
        show(rank, "  step 2 exp_avg_res_row:", np.round(state["exp_avg_res_row"].numpy(), 6).tolist(),
             " reference:", np.round(ref[1].state.tensors[0]["exp_avg_insta_row"], 9).tolist())
        show(rank, "## DC-HIGHER-RANK: a 3-D parameter (2, 3, 4), data parallel")
        try:
            replicated(rank, (2, 3, 4), 1)
            show(rank, "  stepped")
        except RuntimeError as exc:
            show(rank, f"  RuntimeError: {exc}")
        show(rank, "  (8, 8, 1), ZeRO: exp_avg_sq_row of shape", tuple(zero(rank, world, (8, 8, 1), 1)["exp_avg_sq_row"].shape),
             "on rank 0, where the spec's is (8, 8)")
        show(rank, "## DC-ZERO-SIZE: a zero-size matrix (0, 3), data parallel")
        show(rank, "  exp_avg_sq_col:", replicated(rank, (0, 3), 1)[1]["exp_avg_sq_col"].tolist(), " reference: [0.0, 0.0, 0.0]")
        try:
            replicated(rank, (0, 0, 0), 1)
            show(rank, "  (0, 0, 0), data parallel: stepped")
        except RuntimeError as exc:
            show(rank, f"  (0, 0, 0), data parallel: RuntimeError: {exc}")
        try:
            tensor_parallel(rank, world, (0, 0), 0, 1)
            show(rank, "  (0, 0), tensor parallel by rows: stepped")
        except RuntimeError as exc:
            show(rank, f"  (0, 0), tensor parallel by rows: RuntimeError: {str(exc)[:80]}")
        show(rank, "  (0, 3, 0), ZeRO: exp_avg_sq_row of shape", tuple(zero(rank, world, (0, 3, 0), 1)["exp_avg_sq_row"].shape),
             "where the spec's is (0, 3)")
        show(rank, "## DC-FP16-STATE: float16 (3, 4), zero gradient, data parallel")
        p, state = replicated(rank, (3, 4), 1, torch.float16, [np.zeros((3, 4))])
        show(rank, "  state dtype:", state["exp_avg"].dtype, " exp_avg[0,0]:", float(state["exp_avg"][0, 0]), " reference: 0.0")
        show(rank, "## tensor parallel (4, 6), by rows and by columns: step 1 right, step 2 wrong (the alias)")
        for axis, name in ((0, "rows"), (1, "cols")):
            for steps in (1, 2):
                full, state = tensor_parallel(rank, world, (4, 6), axis, steps)
                ref = reference((4, 6), grads_for((4, 6), steps))[-1]
                err = float(np.max(np.abs(full.detach().numpy() - ref.params[0])))
                show(rank, f"  {name}, {steps} step(s): max |theta - reference| = {err:.3g}")
    show(rank, "## DC-ZERO-COL: ZeRO (4, 3) (no padding): the column statistic")
    state = zero(rank, world, (4, 3), 1)
    ref = reference((4, 3), grads_for((4, 3), 1))[-1].state.tensors[0]
    show(rank, "  DistributedCAME exp_avg_sq_col:", np.round(state["exp_avg_sq_col"].numpy(), 6).tolist())
    show(rank, "  reference:                     ", np.round(ref["exp_avg_sq_col"], 6).tolist(),
         f" ratio {np.round(state['exp_avg_sq_col'].numpy() / ref['exp_avg_sq_col'], 6).tolist()}")
    show(rank, f"  rank 0's exp_avg_sq_row: shape {tuple(state['exp_avg_sq_row'].shape)}, the parameter has 4 rows")
    show(rank, "## DC-ZERO-UNEVEN: ZeRO with padding")
    for shape in ((2, 3), (1, 5), (5, 1)):
        try:
            zero(rank, world, shape, 1)
            show(rank, f"  {shape}: stepped")
        except RuntimeError as exc:
            show(rank, f"  {shape} (numel {int(np.prod(shape))}, padding {(world - int(np.prod(shape)) % world) % world}):"
                       f" RuntimeError: {exc}")
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    for world in (2, 4):
        mp.spawn(main, args=(world, free_port()), nprocs=world)
    from colossalai.nn.optimizer import DistributedCAME

    print("## DC-ERR-UNVALIDATED: the constructor checks nothing")
    p = [torch.nn.Parameter(torch.ones(2, 3))]
    for kwargs in (dict(lr=-1.0), dict(lr=None), dict(lr=0.1, betas=(2.0, -1.0, 5.0)), dict(lr=0.1, betas=(0.9,)),
                   dict(lr=0.1, eps=(0.0, -1.0)), dict(lr=0.1, eps="x"), dict(lr=0.1, clip_threshold=-1.0),
                   dict(lr=0.1, weight_decay=float("nan"))):
        try:
            DistributedCAME(p, **kwargs)
            print(f"  {kwargs}: accepted")
        except Exception as exc:  # noqa: BLE001 - what it raises is the evidence
            print(f"  {kwargs}: {type(exc).__name__}: {exc}")
