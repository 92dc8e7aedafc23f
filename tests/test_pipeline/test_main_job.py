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
    for key, spec in summary['specs'].items():
        assert spec['drelus'] <= 0.06 * spec['relus']
    secure = summary['secure']
    assert set(secure) == {'all_relu', 'exact_0.06', 'uniform_0.06'}
    assert secure['exact_0.06']['num_images'] == 3
    assert all(run['predicted_equal'] for run in secure.values())
    assert secure['exact_0.06']['bytes_per_image']['online'] < \
        secure['all_relu']['bytes_per_image']['online']
    with open(os.path.join(report, 'summary.json')) as f:
        assert json.load(f)['baseline'] == summary['baseline']

    # A third run does nothing but rewrite the report.
    monkeypatch.setattr(main_job, 'train_and_test', None)
    run_main_job(small_task(), work)
