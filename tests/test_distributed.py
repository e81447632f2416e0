"""Two-process training (tools/dist_train.sh -> torchrun -> tools/train.py).

On CPU the processes talk gloo (tools/train.py starts the group before the
Runner); with CUDA the config's NCCL backend would be used. A probe hook in
the test config records, per rank, the images of each batch, the rank's own
losses (before they are averaged) and the loss the run logged; at the end each
rank dumps its weights. The test checks that the ranks saw different data,
ended with identical parameters (so gradients were synchronised), and that the
logged loss is the mean of the ranks' losses.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ITERS = 3
BATCH = 2

PROBE = textwrap.dedent('''
    """Per-rank records for tests/test_distributed.py."""
    import json
    import os

    import torch
    import torch.distributed as dist
    from mmdet.registry import HOOKS
    from mmengine.hooks import Hook


    @HOOKS.register_module()
    class RankProbeHook(Hook):
        # before AverageLossAcrossRanksHook (5), which replaces the outputs by their mean
        priority = 'HIGHEST'

        def __init__(self, out_dir):
            self.out_dir = out_dir
            self.own_losses, self.images = [], []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.own_losses.append({k: float(v) for k, v in outputs.items()})
            self.images.append(sorted(s.img_path for s in data_batch['data_samples']))

        def after_train(self, runner):
            rank = dist.get_rank()
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            torch.save({k: p.detach().cpu() for k, p in model.named_parameters()},
                       os.path.join(self.out_dir, f'rank{rank}_params.pth'))
            hub = runner.message_hub
            record = dict(
                rank=rank, world_size=dist.get_world_size(), backend=dist.get_backend(),
                wrapper=type(runner.model).__name__, iters=runner.iter,
                own_losses=self.own_losses, images=self.images,
                logged_loss=[float(v) for v in hub.get_scalar('train/loss').data[0]],
                logged_loss_kpt=[float(v) for v in hub.get_scalar('train/loss_kpt').data[0]])
            with open(os.path.join(self.out_dir, f'rank{rank}.json'), 'w') as f:
                json.dump(record, f)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _run_two_processes(tmp: Path) -> dict:
    from mmretinaface.datasets.synthetic import write_synthetic_widerface
    data = tmp / 'data'
    write_synthetic_widerface(str(data), 10, seed=5, size=160, val_fraction=0.2,
                              num_faces=(1, 3))
    (tmp / 'dist_probe.py').write_text(PROBE)
    records = tmp / 'records'
    records.mkdir()
    config = tmp / 'dist_config.py'
    config.write_text(textwrap.dedent(f'''
        _base_ = {str(ROOT / 'configs' / 'retinaface_mobilenet0.25_synthetic.py')!r}
        custom_imports = dict(imports=['mmretinaface.register', 'dist_probe'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='RankProbeHook', out_dir={str(records)!r}),
                        dict(type='AverageLossAcrossRanksHook')]
        data_root = {str(data) + '/'!r}
        train_dataloader = dict(batch_size={BATCH}, num_workers=0, persistent_workers=False,
                                dataset=dict(data_root=data_root))
        val_dataloader = dict(num_workers=0, persistent_workers=False,
                              dataset=dict(data_root=data_root))
        test_dataloader = val_dataloader
        train_cfg = dict(max_iters={ITERS}, val_interval=1000)
        default_hooks = dict(logger=dict(interval=1),
                             checkpoint=dict(interval={ITERS}))
        log_processor = dict(window_size=1)
    '''))
    work_dir = tmp / 'work'
    env = dict(os.environ, PYTHON=sys.executable, MASTER_PORT=str(_free_port()),
               OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
                   [str(tmp), str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'dist_train.sh'), str(config), '2',
         '--work-dir', str(work_dir), '--cfg-options',
         'train_dataloader.dataset.pipeline.6.img_dim=160'],
        cwd=str(tmp), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ranks = [json.loads((records / f'rank{r}.json').read_text()) for r in (0, 1)]
    params = [torch.load(records / f'rank{r}_params.pth') for r in (0, 1)]
    return dict(work_dir=work_dir, ranks=ranks, params=params, log=proc.stdout + proc.stderr)


def _check_gloo_ddp(dist_run):
    for r, rec in enumerate(dist_run['ranks']):
        assert rec['rank'] == r and rec['world_size'] == 2 and rec['iters'] == ITERS
        assert rec['wrapper'] == 'MMDistributedDataParallel'
        assert rec['backend'] == ('nccl' if torch.cuda.is_available() else 'gloo')


def _check_different_data_identical_weights(dist_run):
    rank0, rank1 = dist_run['ranks']
    for step in range(ITERS):
        assert len(rank0['images'][step]) == BATCH
        assert set(rank0['images'][step]).isdisjoint(rank1['images'][step])
    assert any(abs(a['loss'] - b['loss']) > 1e-4
               for a, b in zip(rank0['own_losses'], rank1['own_losses']))
    p0, p1 = dist_run['params']
    assert p0.keys() == p1.keys() and len(p0) > 50
    for name in p0:
        assert torch.equal(p0[name], p1[name]), f'{name} differs between ranks'
    # and the run really trained: rank 0's checkpoint holds these weights, not the init
    from mmretinaface.utils import allow_runner_checkpoint_globals
    allow_runner_checkpoint_globals()
    ckpt = torch.load(dist_run['work_dir'] / f'iter_{ITERS}.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == ITERS
    for name in p0:
        assert torch.equal(ckpt['state_dict'][name], p0[name])


def _check_logged_loss_is_mean(dist_run):
    rank0, rank1 = dist_run['ranks']
    for key, logged in (('loss', 'logged_loss'), ('loss_kpt', 'logged_loss_kpt')):
        mean = [(a[key] + b[key]) / 2 for a, b in zip(rank0['own_losses'], rank1['own_losses'])]
        assert rank0[logged] == pytest.approx(mean, rel=1e-5)
        assert rank1[logged] == pytest.approx(mean, rel=1e-5)
    # what rank 0 wrote to its log (scalars.json, window 1) is that mean too
    scalars = list(dist_run['work_dir'].glob('*/vis_data/scalars.json'))
    assert len(scalars) == 1
    logged = [json.loads(line) for line in scalars[0].read_text().splitlines()]
    logged = [row['loss'] for row in logged if 'loss' in row]
    mean = [(a['loss'] + b['loss']) / 2 for a, b in zip(rank0['own_losses'],
                                                        rank1['own_losses'])]
    assert logged == pytest.approx(mean, rel=1e-4)


# One test around one 2-process run (a shared fixture would run once per xdist worker).
@pytest.mark.slow  # starts two training processes (torchrun)
def test_two_cpu_processes_train_in_sync(tmp_path):
    dist_run = _run_two_processes(tmp_path)
    _check_gloo_ddp(dist_run)
    _check_different_data_identical_weights(dist_run)
    _check_logged_loss_is_mean(dist_run)


def test_slurm_env_starts_gloo(monkeypatch):
    """``--launcher slurm`` on CPU: the group comes from SLURM's variables."""
    if torch.cuda.is_available():
        pytest.skip('with CUDA mmengine initialises NCCL itself')
    import torch.distributed as dist

    from mmretinaface.utils import init_cpu_distributed
    if dist.is_initialized():
        pytest.skip('a process group exists already')
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK'):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('SLURM_PROCID', '0')
    monkeypatch.setenv('SLURM_NTASKS', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'node-a')
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')  # else read from `scontrol`
    monkeypatch.setenv('MASTER_PORT', str(_free_port()))
    try:
        assert init_cpu_distributed('slurm', timeout_s=60)
        assert dist.get_backend() == 'gloo' and dist.get_world_size() == 1
        assert os.environ['RANK'] == '0' and os.environ['WORLD_SIZE'] == '1'
        assert not init_cpu_distributed('slurm')  # already initialised
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_slurm_train_script_command_line(tmp_path):
    """tools/slurm_train.sh hands srun one task per GPU and tools/train.py --launcher=slurm."""
    fake_srun = tmp_path / 'srun'
    fake_srun.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n')
    fake_srun.chmod(0o755)
    log = tmp_path / 'srun.log'
    env = dict(os.environ, SRUN=str(fake_srun), SRUN_LOG=str(log), GPUS='16',
               GPUS_PER_NODE='8', PYTHON='python3')
    subprocess.run(['bash', str(ROOT / 'tools' / 'slurm_train.sh'), 'gpu', 'rf',
                    'configs/retinaface_r50_widerface.py', 'work_dirs/r50', '--auto-scale-lr'],
                   env=env, check=True, timeout=30)
    args = log.read_text().splitlines()
    assert args[:2] == ['-p', 'gpu']
    for expected in ('--job-name=rf', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
                     'tools/train.py', 'configs/retinaface_r50_widerface.py',
                     '--work-dir=work_dirs/r50', '--launcher=slurm', '--auto-scale-lr'):
        assert expected in args
    cpu_env = dict(env, GPUS='4', GPUS_PER_NODE='0', TASKS_PER_NODE='2')
    subprocess.run(['bash', str(ROOT / 'tools' / 'slurm_train.sh'), 'cpu', 'rf', 'c.py', 'w'],
                   env=cpu_env, check=True, timeout=30)
    args = log.read_text().splitlines()
    assert not any(a.startswith('--gres') for a in args)
    assert '--ntasks=4' in args and '--ntasks-per-node=2' in args


def test_dist_train_script_usage():
    proc = subprocess.run(['bash', str(ROOT / 'tools' / 'dist_train.sh')], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and 'usage' in proc.stderr
    assert shutil.which('bash')
