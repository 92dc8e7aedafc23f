"""The whole method end to end: baseline, distortion, budgets, finetunes, secure inference, report.

Every stage writes ``<work_dir>/<stage>/result.json`` (atomically) when it is
done and is skipped on the next run; a training stage that was killed resumes
from its last mmengine checkpoint and a distortion extraction from its last
chunk, so re-running the same command continues where it stopped.
"""
import dataclasses
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
        solvers: ``exact`` (knapsack) and/or ``uniform``; with both, each
            uniform spec has at least the knapsack's DReLUs at its budget
            (:func:`.solve.solve_uniform_at_least`), else at most the budget.
        distortion_method: ``sketch`` or ``exact``.
        num_samples: Training samples for the distortion.
        secure_images: Test images run under secure inference for the knapsack
            model at the headline budget (6 %, else the first budget).
        secure_images_other: Test images for every other model.
        secure_bits: Compared bits of the Block-ReLU DReLUs under MPC.
        secure_margin, calibration_images: Below 64 bits, each site's shift
            keeps ``secure_margin`` times the largest value it compares on
            ``calibration_images`` training images in range.
        secure_batch_size: Images per secure protocol run (costs per image
            do not depend on it; the online time per image does).
        distill: Finetune every Block-ReLU network with knowledge distillation
            from the all-ReLU baseline (``model.distill_cfg``: soft targets
            at this temperature, weight 1, plus the task loss); None: no
            distillation.
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
    secure_images: int = 500
    secure_images_other: int = 100
    secure_bits: int = 64
    secure_margin: float = 4.0
    calibration_images: int = 256
    secure_batch_size: int = 1
    distill: Optional[float] = None
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
                      'train_dataloader.dataset.num_samples': 40000},
        distill=4.0),
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

    def run(self, name: str, fn: Callable[[str], dict], params: Optional[dict] = None) -> dict:
        """Run stage ``name`` unless done before with the same ``params`` (JSON-able)."""
        path = os.path.join(self.work_dir, name, 'result.json')
        done = None
        if os.path.exists(path):
            with open(path) as f:
                done = json.load(f)
            if done.get('params') != params:
                log(f'{name}: done before with {done.get("params")}, now {params}: running again')
                done = None
            else:
                log(f'{name}: done before, skipped')
        if done is None:
            log(f'{name}: running')
            start = time.time()
            done = dict(result=fn(self.dir(name)), seconds=round(time.time() - start, 1),
                        params=params)
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


def secure_run(task: Task, cfg, checkpoint: str, spec: Optional[str], images, labels,
               test_set: Optional[float], calibration_images=None) -> dict:
    """One secure inference run of the main job and its record for the report.

    The metric against the labels is reported three ways on the same images:
    secure, the plaintext model through the config's test path, and the
    plaintext model on the whole test set (``test_set``).
    """
    from ..mpc.infer import secure_inference
    n = len(images)
    res = secure_inference(cfg, checkpoint, spec=spec, images=images, labels=labels,
                           bits=task.secure_bits, batch_size=task.secure_batch_size,
                           test_indices=None if labels is None else list(range(n)),
                           test_set_metric=test_set, calibration_images=calibration_images,
                           margin=task.secure_margin)
    out = {k: res[k] for k in ('agreement', 'time', 'metric', 'predicted_equal', 'num_images',
                               'max_logit_error', 'margin') if k in res}
    out['bits'] = task.secure_bits
    out['bytes_per_image'] = res['bytes']['per_image']
    out['bytes_per_session'] = {k: res['bytes'][k] for k in ('weights', 'handshake')}
    return out


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
        from ..budget.solve import solve_budget, solve_uniform_at_least
        out = {}
        # knapsack first: each uniform row takes at least the knapsack's DReLUs at its budget,
        # so the comparison never favours the knapsack by budget
        for solver in sorted(task.solvers, key=lambda s: s != 'exact'):
            for budget in task.budgets:
                knapsack = out.get(f'exact_{budget:g}')
                if solver == 'uniform' and knapsack is not None:
                    spec = solve_uniform_at_least(dist['dir'], knapsack['drelus'])
                else:
                    spec = solve_budget(dist['dir'], budget, solver)
                path = os.path.join(d, f'{solver}_{budget:g}.json')
                spec.save(path)
                out[f'{solver}_{budget:g}'] = dict(path=path, **{
                    k: spec.metadata.get(k) for k in ('drelus', 'relus', 'objective', 'solver', 'method')})
        return out
    spec_files = stages.run('specs', specs, params=dict(uniform='at_least_knapsack'))

    finetuned = {}
    for key, info in spec_files.items():
        overrides = dict(task.finetune_cfg)
        if task.distill is not None:  # the all-ReLU baseline teaches every Block-ReLU network
            overrides['model.distill_cfg'] = dict(teacher_checkpoint=base['checkpoint'],
                                                  temperature=float(task.distill), weight=1.0)
        finetuned[key] = stages.run(
            f'finetune_{key}', lambda d, info=info, o=overrides: train_and_test(
                task.config, d, o, task.metric, load_from=base['checkpoint'],
                spec=info['path']),
            params=dict(distill=task.distill, drelus=info['drelus']))

    def secure(d):
        from ..mpc.infer import load_test_inputs
        from ..utils.config import build_model, load_config
        cfg = load_config(task.config)
        model = build_model(cfg, checkpoint=base['checkpoint'])
        most = max(task.secure_images, task.secure_images_other)
        images, labels = load_test_inputs(cfg, model, most)  # the first test images
        calibration = None
        if task.secure_bits < 64:
            from ..budget.distortion import load_samples
            calibration, _ = load_samples(cfg, model, task.calibration_images, seed=0,
                                          shape=tuple(images.shape[2:]))
        runs = {}
        targets = [('all_relu', None, base['checkpoint'], base['metric'])] + [
            (key, spec_files[key]['path'], finetuned[key]['checkpoint'],
             finetuned[key]['metric']) for key in spec_files]
        for key, spec, checkpoint, test_set in targets:
            n = task.secure_images if key == headline else task.secure_images_other
            log(f'secure inference: {key} on {min(n, len(images))} test images')
            runs[key] = secure_run(task, cfg, checkpoint, spec, images[:n],
                                   None if labels is None else labels[:n], test_set, calibration)
        return runs
    headline = f'exact_{0.06 if 0.06 in task.budgets else task.budgets[0]:g}'
    secure_runs = stages.run('secure', secure, params=dict(
        images=task.secure_images, images_other=task.secure_images_other,
        bits=task.secure_bits, batch_size=task.secure_batch_size, headline=headline,
        margin=task.secure_margin if task.secure_bits < 64 else None,
        report=2))  # report: the layout of a run's record

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


def task_from_args(task: str, budgets: Optional[List[float]] = None, **overrides) -> Task:
    """A named demo task, or any config (a paper task) with the same stages.

    Args:
        task: A name in :data:`TASKS` or a config file.
        budgets: DReLU budgets replacing the task's.
        **overrides: Other :class:`Task` fields (e.g. ``secure_images=500``,
            ``secure_images_other=100``, ``secure_bits=16``); None keeps the
            task's value.
    """
    if task in TASKS:
        t = TASKS[task]
    elif os.path.isfile(task):
        cfg = Config.fromfile(task)
        metric = 'accuracy/top1' if cfg.get('default_scope') == 'mmpretrain' else 'mIoU'
        t = Task(config=task, metric=metric, budgets=(0.03, 0.06, 0.09, 0.12, 0.15, 0.18),
                 num_samples=512)
    else:
        raise SystemExit(f'unknown task {task!r}: one of {sorted(TASKS)} or a config file')
    names = {f.name for f in dataclasses.fields(Task)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f'unknown Task field(s) {unknown}; expected some of {sorted(names)}')
    changes = {k: v for k, v in overrides.items() if v is not None}
    if budgets:
        changes['budgets'] = tuple(budgets)
    for key in ('secure_images', 'secure_images_other', 'secure_batch_size'):
        if key in changes and int(changes[key]) < 1:
            raise ValueError(f'{key} must be >= 1, got {changes[key]}')
    return dataclasses.replace(t, **changes)
