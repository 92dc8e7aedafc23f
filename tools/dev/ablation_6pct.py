"""What each choice of the method buys at the main job's 6 % point.

Run after ``tools/run_main_job.py``; it reuses the job's baseline and, for
each variant, changes one thing and repeats distortion (where it differs),
the exact knapsack at the budget, the job's finetune and the test:

- ``shipped``: the main job's own 6 % knapsack row (read, not re-run);
- ``all_pairs``: candidates ``all_pairs`` instead of the authors' ``paper`` set;
- ``augmented``: distortion samples through the augmented training pipeline
  instead of the deterministic test pipeline;
- ``no_distill``: the shipped spec, finetuned without distillation.

Resumable like the main job (a finished variant is skipped). Writes
``<work-dir>/ablation/summary.json`` and prints a table.

Usage: python tools/dev/ablation_6pct.py [--work-dir work_dirs/main_job/fashion_mnist]
"""
import argparse
import json
import os

from block_relu_plugin.pipeline.main_job import TASKS, Stages, train_and_test


def _distortion(task, checkpoint, out_dir, candidates=None, augmented=False):
    from block_relu_plugin.budget.candidates import candidate_set
    from block_relu_plugin.budget.distortion import (build_plain_model, extract_distortion,
                                                     load_samples)
    from block_relu_plugin.utils.config import default_input_size, load_config
    cfg = load_config(task.config)
    if augmented:  # the old behaviour: the training pipeline, with its augmentations
        cfg.distortion_pipeline = cfg.train_dataloader.dataset.pipeline
    model = build_plain_model(cfg, checkpoint)
    inputs, _ = load_samples(cfg, model, task.num_samples, seed=0,
                             shape=default_input_size(cfg))
    kw = {} if candidates is None else dict(candidates=candidate_set(candidates))
    extract_distortion(model, inputs, out_dir, method=task.distortion_method, **kw)
    return out_dir


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--work-dir', default='work_dirs/main_job/fashion_mnist',
                    help='the main job\'s work dir (default: the Fashion-MNIST demo\'s)')
    ap.add_argument('--budget', type=float, default=0.06, help='budget fraction (default 0.06)')
    args = ap.parse_args(argv)
    task = TASKS['fashion_mnist']
    with open(os.path.join(args.work_dir, 'baseline', 'result.json')) as f:
        base = json.load(f)['result']
    with open(os.path.join(args.work_dir, 'specs', 'result.json')) as f:
        specs = json.load(f)['result']
    key = f'exact_{args.budget:g}'
    with open(os.path.join(args.work_dir, f'finetune_{key}', 'result.json')) as f:
        shipped = json.load(f)['result']
    stages = Stages(os.path.join(args.work_dir, 'ablation'))

    def finetune(spec_path, distill=True):
        def run(d):
            o = dict(task.finetune_cfg)
            if distill and task.distill is not None:
                o['model.distill_cfg'] = dict(teacher_checkpoint=base['checkpoint'],
                                              temperature=float(task.distill), weight=1.0)
            return train_and_test(task.config, d, o, task.metric,
                                  load_from=base['checkpoint'], spec=spec_path)
        return run

    def solved(dist_dir, d):
        from block_relu_plugin.budget.solve import solve_budget
        spec = solve_budget(dist_dir, args.budget, 'exact')
        path = os.path.join(d, 'spec.json')
        spec.save(path)
        return path, spec.metadata.get('drelus')

    rows = {'shipped': dict(metric=shipped['metric'], drelus=specs[key]['drelus'])}
    for name, kw in (('all_pairs', dict(candidates='all_pairs')),
                     ('augmented', dict(augmented=True))):
        def variant(d, kw=kw):
            dist_dir = _distortion(task, base['checkpoint'], os.path.join(d, 'distortion'), **kw)
            path, drelus = solved(dist_dir, d)
            res = finetune(path)(os.path.join(d, 'finetune'))
            return dict(metric=res['metric'], drelus=drelus)
        rows[name] = stages.run(name, variant)
    res = stages.run('no_distill', finetune(specs[key]['path'], distill=False))
    rows['no_distill'] = dict(metric=res['metric'], drelus=specs[key]['drelus'])
    summary = dict(baseline=base['metric'], budget=args.budget, rows=rows)
    with open(os.path.join(args.work_dir, 'ablation', 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    print(f'baseline {base["metric"]:.2f}; {args.budget:.0%} knapsack:')
    print(f'{"variant":12s} {"DReLUs":>8s} {"top-1":>7s} {"vs shipped":>10s}')
    for name, r in rows.items():
        print(f'{name:12s} {r["drelus"]:8d} {r["metric"]:7.2f} '
              f'{r["metric"] - rows["shipped"]["metric"]:+10.2f}')


if __name__ == '__main__':
    main()
