# Baseline: mmpretrain's ResNet50 on ImageNet-1k (paper: 76.55 % top-1, the OpenMMLab checkpoint).
_base_ = 'mmpretrain::resnet/resnet50_8xb32_in1k.py'
custom_imports = dict(imports=['block_relu_plugin'], allow_failed_imports=False)
input_size = (224, 224)
