from setuptools import find_packages, setup

setup(
    name='block_relu_plugin',
    version='0.1.0',
    description='Budgeted Block-ReLU for OpenMMLab 2.x networks and their 3-party secure inference',
    packages=find_packages(include=['block_relu_plugin', 'block_relu_plugin.*']),
    # The authors' candidate patch sizes per map size (budget/candidates.py).
    package_data={'block_relu_plugin.budget': ['authors_block_sizes.json'],
                  'block_relu_plugin.mpc': ['SECURITY.md']},
    python_requires='>=3.10',
    # The OpenMMLab stack itself is pinned and installed by tools/setup_env.sh
    # (mmcv must be built from source with ops, after torch).
    install_requires=[
        'numpy>=1.24',
        'scipy>=1.10',
        'cryptography>=42',
        'matplotlib>=3.7',
        'tqdm>=4.60',
        'ftfy',
        'regex',
    ],
    extras_require={'dev': ['pytest>=7']},
)
