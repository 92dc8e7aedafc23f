"""The main job's report: a markdown summary and PNG plots."""
import os

from ..budget.plots import plot_patch_map
from ..spec.spec import BlockReLUSpec


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _points(summary: dict, solver: str):
    rows = []
    for key, info in summary['specs'].items():
        if info['solver'] == solver:
            rows.append((100.0 * info['drelus'] / info['relus'], summary['finetuned'][key], key))
    return sorted(rows)


def plot_metric_vs_budget(summary: dict, path: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for solver, label, style in (('exact', 'knapsack patch sizes', 'o-'),
                                 ('uniform', 'uniform patch size', 's--')):
        pts = _points(summary, solver)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.axhline(summary['baseline'], color='k', lw=1, label='all ReLU (baseline)')
    ax.set_xlabel('DReLUs (% of the ReLU count)')
    ax.set_ylabel(summary['metric'])
    ax.set_title('Test metric after finetuning vs DReLU budget')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_secure_costs(summary: dict, paper: dict, path: str) -> str:
    plt = _pyplot()
    secure = summary['secure']
    fig, (ax_b, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    for solver, label, style in (('exact', 'knapsack', 'o-'), ('uniform', 'uniform', 's--')):
        pts = [(p[0], secure[p[2]]) for p in _points(summary, solver) if p[2] in secure]
        if pts:
            ax_b.plot([p[0] for p in pts], [p[1]['bytes_per_image']['online'] / 1e6 for p in pts],
                      style, label=f'{label}: online')
            ax_b.plot([p[0] for p in pts],
                      [(p[1]['bytes_per_image']['online'] + p[1]['bytes_per_image']['offline'])
                       / 1e6 for p in pts], style, alpha=0.4, label=f'{label}: online + offline')
            ax_t.plot([p[0] for p in pts], [p[1]['time']['online_per_image'] for p in pts],
                      style, label=f'{label}: online')
    if 'all_relu' in secure:
        base = secure['all_relu']
        ax_b.plot([100], [base['bytes_per_image']['online'] / 1e6], 'k^', label='all ReLU: online')
        ax_t.plot([100], [base['time']['online_per_image']], 'k^', label='all ReLU: online')
    # The paper's CIFAR-100 ResNet18 (full width, 32x32) figures, for scale.
    ax_b.plot([6, 100], [paper[0.06]['bytes'] / 1e6, paper['all_relu']['bytes'] / 1e6], 'rx',
              ms=9, label='paper, CIFAR-100 ResNet18 (full width)')
    ax_t.plot([6, 100], [paper[0.06]['seconds'], paper['all_relu']['seconds']], 'rx', ms=9,
              label='paper, CIFAR-100 ResNet18 (full width)')
    ax_b.set_ylabel('MB per image (all parties)')
    ax_t.set_ylabel('seconds per image (client wall clock)')
    for ax in (ax_b, ax_t):
        ax.set_xlabel('DReLUs (% of the ReLU count)')
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7)
    fig.suptitle('Secure 3-party inference cost vs DReLU budget')
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def render_report(report_dir: str, summary: dict, task, paper: dict) -> None:
    """Write the plots and ``summary.md`` into ``report_dir``."""
    from ..budget.distortion import load_distortion
    plots = {'metric_vs_budget.png': plot_metric_vs_budget(
        summary, os.path.join(report_dir, 'metric_vs_budget.png'))}
    if summary.get('secure'):
        plots['secure_cost_vs_budget.png'] = plot_secure_costs(
            summary, paper, os.path.join(report_dir, 'secure_cost_vs_budget.png'))
    sites = load_distortion(summary['distortion']['dir']).sites
    knapsack = [k for k, v in summary['specs'].items() if v['solver'] == 'exact']
    if knapsack:
        key = 'exact_0.06' if 'exact_0.06' in knapsack else knapsack[0]
        spec = BlockReLUSpec.load(summary['specs'][key]['path'])
        plots['patch_sizes.png'] = plot_patch_map(
            spec, sites, os.path.join(report_dir, 'patch_sizes.png'))

    lines = [f'# Block-ReLU main job: `{summary["task"]}`', '',
             f'Baseline (all ReLU): **{summary["metric"]} = {summary["baseline"]:.2f}**', '',
             f'Distortion: `{summary["distortion"]["method"]}` on '
             f'{summary["distortion"]["num_samples"]} training samples.', '',
             '| patch sizes | DReLU budget | DReLUs used | ' + summary['metric'] +
             ' after finetune | secure agreement | online MB / image | offline MB / image '
             '| online s / image |', '|---|---|---|---|---|---|---|---|']
    secure = summary.get('secure', {})

    def row(name, budget, drelus, metric, key):
        s = secure.get(key)
        sec = (f'{100 * s["agreement"]:.1f} % of {s["num_images"]}',
               f'{s["bytes_per_image"]["online"] / 1e6:.2f}',
               f'{s["bytes_per_image"]["offline"] / 1e6:.2f}',
               f'{s["time"]["online_per_image"]:.3f}') if s else ('-',) * 4
        return f'| {name} | {budget} | {drelus} | {metric:.2f} | ' + ' | '.join(sec) + ' |'

    relus = next(iter(summary['specs'].values()))['relus']
    lines.append(row('all ReLU', '100 %', f'{relus:,}', summary['baseline'], 'all_relu'))
    for key, info in sorted(summary['specs'].items(),
                            key=lambda kv: (kv[1]['solver'], kv[1]['drelus'])):
        name = 'knapsack' if info['solver'] == 'exact' else info['solver']
        budget = key.split('_', 1)[1]
        lines.append(row(name, f'{100 * float(budget):g} %', f'{info["drelus"]:,}',
                         summary['finetuned'][key], key))
    lines += ['', 'Secure inference: three parties (client, server, helper) on this machine, '
              'mutual TLS over loopback; agreement = secure prediction equals the plaintext '
              'prediction of the same model.', '']
    lines += ['| stage | seconds (when it ran) |', '|---|---|']
    lines += [f'| {k} | {v:.0f} |' for k, v in summary.get('stage_seconds', {}).items()]
    lines += ['']
    lines += [f'![{name}]({name})' for name in plots]
    with open(os.path.join(report_dir, 'summary.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')



