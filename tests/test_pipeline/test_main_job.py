"""The main job end to end on a small slice of the real Fashion-MNIST data, and its resume."""
import json
import os

import pytest

from block_relu_plugin.pipeline import main_job
from block_relu_plugin.pipeline.main_job import Task, run_main_job

SMALL = {'train_dataloader.dataset.num_samples': 256, 'train_cfg.max_epochs': 1,
         'train_cfg.val_interval': 100, 'test_dataloader.dataset.num_samples': 128,
         'param_scheduler': [dict(type='ConstantLR', factor=1.0, by_epoch=False)]}


def small_task():
    return Task(config='configs/demo/resnet18-w16_fashion-mnist.py', metric='accuracy/top1',
                baseline_cfg=SMALL, finetune_cfg=SMALL, budgets=(0.06, ), num_samples=16,
                secure_images=3, secure_images_other=2)


def test_main_job_report_and_resume(tmp_path, monkeypatch):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    monkeypatch.chdir(repo)
    work = str(tmp_path / 'job')

    # A crash in the first finetune: everything before it is kept.
    real = main_job.train_and_test
    calls = []

    def crash_once(config, work_dir, *args, **kwargs):
        if 'finetune' in work_dir and not calls:
            calls.append(work_dir)
            raise RuntimeError('killed')
        return real(config, work_dir, *args, **kwargs)

    monkeypatch.setattr(main_job, 'train_and_test', crash_once)
    with pytest.raises(RuntimeError, match='killed'):
        run_main_job(small_task(), work)
    done = sorted(d for d in os.listdir(work) if os.path.exists(os.path.join(work, d, 'result.json')))
    assert done == ['baseline', 'distortion', 'specs']
    baseline = open(os.path.join(work, 'baseline', 'result.json')).read()

    summary = run_main_job(small_task(), work)
    assert open(os.path.join(work, 'baseline', 'result.json')).read() == baseline
    report = os.path.join(work, 'report')
    for name in ('summary.md', 'summary.json', 'metric_vs_budget.png',
                 'secure_cost_vs_budget.png', 'patch_sizes.png'):
        assert os.path.getsize(os.path.join(report, name)) > 0, name
    assert set(summary['finetuned']) == {'exact_0.06', 'uniform_0.06'}
    specs = summary['specs']
    assert specs['exact_0.06']['drelus'] <= 0.06 * specs['exact_0.06']['relus']
    # uniform is compared at no fewer DReLUs than the knapsack
    assert specs['uniform_0.06']['drelus'] >= specs['exact_0.06']['drelus']
    secure = summary['secure']
    assert set(secure) == {'all_relu', 'exact_0.06', 'uniform_0.06'}
    assert secure['exact_0.06']['num_images'] == 3
    assert all(run['predicted_equal'] for run in secure.values())
    # truth: the metric against the labels, the plaintext one through the config's test path
    for key, run in secure.items():
        m = run['metric']
        assert m['name'] == 'accuracy/top1'
        assert m['plaintext'] == pytest.approx(m['stock'])  # same inputs as the stock path
        assert m['test_set'] == (summary['baseline'] if key == 'all_relu'
                                 else summary['finetuned'][key])
        assert run['bytes_per_session']['weights'] > 0
        b = run['bytes_per_image']
        assert b['online_offline'] == pytest.approx(b['online'] + b['offline'])
    md = open(os.path.join(report, 'summary.md')).read()
    for column in ('accuracy/top1, secure', 'accuracy/top1, plaintext, same images',
                   'accuracy/top1, test set', 'online + offline MB / image',
                   'masked weights MB / session'):
        assert column in md, column
    assert secure['exact_0.06']['bytes_per_image']['online'] < \
        secure['all_relu']['bytes_per_image']['online']
    with open(os.path.join(report, 'summary.json')) as f:
        assert json.load(f)['baseline'] == summary['baseline']

    # A third run does nothing but rewrite the report.
    monkeypatch.setattr(main_job, 'train_and_test', None)
    run_main_job(small_task(), work)


def test_secure_image_counts_default_to_500_and_100():
    task = Task(config='configs/demo/resnet18-w16_fashion-mnist.py', metric='accuracy/top1')
    assert (task.secure_images, task.secure_images_other) == (500, 100)


def test_stage_runs_again_when_its_params_change(tmp_path):
    stages, calls = main_job.Stages(str(tmp_path)), []

    def fn(d):
        calls.append(d)
        return len(calls)

    assert stages.run('s', fn, params=dict(n=1)) == 1
    assert stages.run('s', fn, params=dict(n=1)) == 1  # done before: skipped
    assert stages.run('s', fn, params=dict(n=2)) == 2  # other params: runs again
    assert stages.run('t', fn) == 3 and stages.run('t', fn) == 3


def test_task_from_args_overrides():
    from block_relu_plugin.pipeline.main_job import TASKS, task_from_args
    task = task_from_args('fashion_mnist', [0.06], secure_images=50, secure_images_other=None)
    assert (task.secure_images, task.secure_images_other, task.budgets) == (50, 100, (0.06, ))
    assert TASKS['fashion_mnist'].secure_images == 500  # the named task is not changed
    with pytest.raises(ValueError, match='secure_image'):
        task_from_args('fashion_mnist', secure_image=5)
    with pytest.raises(ValueError, match='secure_images must be >= 1'):
        task_from_args('fashion_mnist', secure_images=0)
