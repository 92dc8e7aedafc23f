"""The whole method end to end: baseline, distortion, budgets, finetunes, secure inference, report.

Every stage writes ``<work_dir>/<stage>/result.json`` (atomically) when it is
done and is skipped on the next run; a training stage that was killed resumes
from its last mmengine checkpoint and a distortion extraction from its last
chunk, so re-running the same command continues where it stopped.
"""
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from mmengine.config import Config

#: The paper's CIFAR-100 ResNet18 secure-inference figures (PROTOCOL.md), for the plots.
PAPER_CIFAR_R18 = {'all_relu': dict(bytes=493_540_032, seconds=2.86),
                   0.06: dict(bytes=210_344_192, seconds=1.51)}


@dataclass
class Task:
    """What the main job runs.

    Args:
        config: The baseline config (its ``block_relu_cfg`` holds only
            architecture edits).
        metric: The test metric reported (``accuracy/top1`` or ``mIoU``).
        baseline_cfg: Config overrides for the baseline training.
        finetune_cfg: Config overrides for the Block-ReLU finetunes.
        budgets: DReLU budgets (fractions of the ReLU count).
        solvers: ``exact`` (knapsack) and/or ``uniform``.
        distortion_method: ``sketch`` or ``exact``.
        num_samples: Training samples for the distortion.
        secure_images: Test images run under secure inference for the knapsack
            model at the headline budget (6 %, else the first budget).
        secure_images_other: Test images for every other model (cost figures).
        secure_bits: Compared bits of the Block-ReLU DReLUs under MPC.
        prepare: Called once before training (e.g. converting weights).
    """
    config: str
    metric: str
    baseline_cfg: dict = field(default_factory=dict)
    finetune_cfg: dict = field(default_factory=dict)
    budgets: Sequence[float] = (0.03, 0.06, 0.12)
    solvers: Sequence[str] = ('exact', 'uniform')
    distortion_method: str = 'sketch'
    num_samples: int = 256
    secure_images: int = 100
    secure_images_other: int = 20
    secure_bits: int = 64
    prepare: Optional[Callable[[str], None]] = None


def _prepare_mobilenetv2(work_dir: str) -> None:
    from ..datasets.pretrained import convert_deepsort_mobilenetv2, save_checkpoint
    path = 'work_dirs/pretrained/mobilenetv2_deepsort_mmseg.pth'
    if not os.path.exists(path):
        save_checkpoint(convert_deepsort_mobilenetv2(target='mmseg'), path)


TASKS: Dict[str, Task] = {
    'fashion_mnist': Task(
        config='configs/demo/resnet18-w16_fashion-mnist.py', metric='accuracy/top1',
        baseline_cfg={'train_cfg.val_interval': 100},  # validated at the last epoch only
        # One pass over 40k samples per Block-ReLU network (lr 0.02, cosine): measured here
        # 88.4 % at 6 % with the full 60k and 87.2 % with 20k (lr 0.05), against the
        # main job's time budget of about 20 minutes.
        finetune_cfg={'train_cfg.max_epochs': 1, 'train_cfg.val_interval': 100,
                      'optim_wrapper.optimizer.lr': 0.02,
                      'param_scheduler': [dict(type='CosineAnnealingLR', by_epoch=True, T_max=1,
                                               eta_min=1e-4, convert_to_iter_based=True)],
                      'train_dataloader.dataset.num_samples': 40000}),
    'fashion_mosaic': Task(
        config='configs/demo/deeplabv3_mnv2-relu_fashion-mosaic.py', metric='mIoU',
        baseline_cfg={'train_cfg.val_interval': 100000},
        finetune_cfg={'train_cfg.max_iters': 400, 'train_cfg.val_interval': 100000,
                      'optim_wrapper.optimizer.lr': 0.01,
                      'param_scheduler': [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0,
                                               end=400, by_epoch=False)]},
        budgets=(0.06, ), num_samples=64, secure_images=4, secure_images_other=2,
        prepare=_prepare_mobilenetv2),
}


def log(msg: str) -> None:
    print(f'[main job {time.strftime("%H:%M:%S")}] {msg}', flush=True)


class Stages:
    """Stage bookkeeping: a stage is done when its ``result.json`` exists."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.seconds: Dict[str, float] = {}  # what each stage cost when it ran
        os.makedirs(work_dir, exist_ok=True)

    def dir(self, name: str) -> str:
        path = os.path.join(self.work_dir, name)
        os.makedirs(path, exist_ok=True)
        return path

    def run(self, name: str, fn: Callable[[str], dict]) -> dict:
        path = os.path.join(self.work_dir, name, 'result.json')
        if os.path.exists(path):
            with open(path) as f:
                done = json.load(f)
            log(f'{name}: done before, skipped')
        else:
            log(f'{name}: running')
            start = time.time()
            done = dict(result=fn(self.dir(name)), seconds=round(time.time() - start, 1))
            _write_json(path, done)
            log(f'{name}: finished in {done["seconds"]:.0f} s')
        self.seconds[name] = done['seconds']
        return done['result']


def _write_json(path: str, data) -> None:
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def train_and_test(config: str, work_dir: str, overrides: dict, metric: str,
                   load_from: Optional[str] = None, spec: Optional[str] = None) -> dict:
    """Train a config with mmengine's Runner (resuming a killed run) and test it."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(overrides)
    cfg.work_dir = work_dir
    if spec is not None:
        cfg.model.block_relu_cfg = dict(cfg.model.get('block_relu_cfg') or {}, spec=spec)
    cfg.load_from = load_from
    cfg.resume = os.path.exists(os.path.join(work_dir, 'last_checkpoint'))
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    with open(os.path.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return dict(checkpoint=checkpoint, metric=float(metrics[metric]),
                metrics={k: float(v) for k, v in metrics.items()})


def run_main_job(task: Task, work_dir: str, num_threads: Optional[int] = None) -> dict:
    """Run every stage of ``task`` under ``work_dir`` and write the report; returns the summary."""
    import torch
    if num_threads:
        torch.set_num_threads(num_threads)
    stages = Stages(work_dir)
    if task.prepare is not None:
        task.prepare(work_dir)

    base = stages.run('baseline', lambda d: train_and_test(
        task.config, d, task.baseline_cfg, task.metric))

    def distortion(d):
        from ..budget.distortion import build_plain_model, extract_distortion, load_samples
        from ..utils.config import default_input_size, load_config
        cfg = load_config(task.config)
        model = build_plain_model(cfg, base['checkpoint'])
        inputs, _ = load_samples(cfg, model, task.num_samples, seed=0,
                                 shape=default_input_size(cfg))
        extract_distortion(model, inputs, d, method=task.distortion_method, progress=True,
                           info=dict(config=task.config, checkpoint=base['checkpoint']))
        return dict(dir=d, method=task.distortion_method, num_samples=task.num_samples)
    dist = stages.run('distortion', distortion)

    def specs(d):
        from ..budget.solve import solve_budget
        out = {}
        for solver in task.solvers:
            for budget in task.budgets:
                spec = solve_budget(dist['dir'], budget, solver)
                path = os.path.join(d, f'{solver}_{budget:g}.json')
                spec.save(path)
                out[f'{solver}_{budget:g}'] = dict(path=path, **{
                    k: spec.metadata.get(k) for k in ('drelus', 'relus', 'objective', 'solver')})
        return out
    spec_files = stages.run('specs', specs)

    finetuned = {}
    for key, info in spec_files.items():
        finetuned[key] = stages.run(f'finetune_{key}', lambda d, info=info: train_and_test(
            task.config, d, task.finetune_cfg, task.metric, load_from=base['checkpoint'],
            spec=info['path']))

    def secure(d):
        from ..mpc.infer import load_test_inputs, secure_inference
        from ..utils.config import build_model, load_config
        cfg = load_config(task.config)
        model = build_model(cfg, checkpoint=base['checkpoint'])
        images, labels = load_test_inputs(cfg, model, task.secure_images)
        headline = f'exact_{0.06 if 0.06 in task.budgets else task.budgets[0]:g}'
        runs = {}
        targets = [('all_relu', None, base['checkpoint'])] + [
            (key, spec_files[key]['path'], finetuned[key]['checkpoint']) for key in spec_files]
        for key, spec, checkpoint in targets:
            n = task.secure_images if key == headline else task.secure_images_other
            log(f'secure inference: {key} on {n} test images')
            res = secure_inference(task.config, checkpoint, spec=spec, images=images[:n],
                                   labels=None if labels is None else labels[:n],
                                   bits=task.secure_bits)
            runs[key] = {k: res[k] for k in ('agreement', 'time', 'accuracy', 'plain_accuracy',
                                             'miou', 'plain_miou', 'predicted_equal',
                                             'num_images', 'max_logit_error') if k in res}
            runs[key]['bytes_per_image'] = res['bytes']['per_image']
        return runs
    secure_runs = stages.run('secure', secure)

    summary = dict(task=task.config, metric=task.metric, baseline=base['metric'],
                   distortion=dist, specs=spec_files,
                   finetuned={k: v['metric'] for k, v in finetuned.items()},
                   secure=secure_runs, stage_seconds=stages.seconds)
    write_report(work_dir, summary, task)
    return summary


def write_report(work_dir: str, summary: dict, task: Task) -> None:
    """``report/summary.json``, ``report/summary.md`` and the PNG plots."""
    from .report import render_report
    report_dir = os.path.join(work_dir, 'report')
    os.makedirs(report_dir, exist_ok=True)
    _write_json(os.path.join(report_dir, 'summary.json'), summary)
    render_report(report_dir, summary, task, PAPER_CIFAR_R18)
    log(f'report written to {report_dir}')


def task_from_args(task: str, budgets: Optional[List[float]] = None) -> Task:
    """A named demo task, or any config (a paper task) with the same stages."""
    if task in TASKS:
        t = TASKS[task]
    elif os.path.isfile(task):
        cfg = Config.fromfile(task)
        metric = 'accuracy/top1' if cfg.get('default_scope') == 'mmpretrain' else 'mIoU'
        t = Task(config=task, metric=metric, budgets=(0.03, 0.06, 0.09, 0.12, 0.15, 0.18),
                 num_samples=512)
    else:
        raise SystemExit(f'unknown task {task!r}: one of {sorted(TASKS)} or a config file')
    if budgets:
        t.budgets = tuple(budgets)
    return t
