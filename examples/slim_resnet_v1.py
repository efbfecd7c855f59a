"""TF-slim's ResNet v1 (``tf_slim.nets.resnet_v1``, the model of the released ImageNet checkpoints),
ported line by line onto ``sp.slim``.

The code below is slim's ``resnet_utils.py`` and ``resnet_v1.py`` with three kinds of change: ``tf.``
ops become ``jnp``/``jax.nn`` (``pad``, ``reduce_mean``, ``squeeze``, ``relu``), ``tf.variable_scope``
becomes ``sp.scope``, and ``slim`` is ``sp.slim``. Everything else (the arg scopes, the end points, the
``Block`` tuples, the ``output_stride`` logic) is slim's, so the parameters carry slim's names
(``resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights``) and a TF checkpoint of the model loads
by name; ``tests/test_slim.py`` checks this port against tf_slim's own ResNet-50, checkpoint and
logits.

    python examples/slim_resnet_v1.py                               # random weights: names, shapes
    python examples/slim_resnet_v1.py --checkpoint resnet_v1_50.ckpt  # slim's released weights

With a checkpoint, the classes of a test pattern are printed (slim's ResNet v1 expects VGG-style
preprocessing: RGB minus the ImageNet channel means, no scaling).
"""

from __future__ import annotations

import argparse
import collections
import time

import jax
import jax.numpy as jnp
import numpy as np

import scoped_params as sp

slim = sp.slim


# --- resnet_utils.py ------------------------------------------------------------------------------


class Block(collections.namedtuple("Block", ["scope", "unit_fn", "args"])):
    """A named block of units: ``unit_fn`` is called once per entry of ``args`` (its kwargs)."""


def subsample(inputs, factor, scope=None):
    if factor == 1:
        return inputs
    return slim.max_pool2d(inputs, [1, 1], stride=factor, scope=scope)


def conv2d_same(inputs, num_outputs, kernel_size, stride, rate=1, scope=None):
    """A strided convolution with explicit padding, so its output does not depend on the input size
    being even (slim's ``conv2d_same``)."""
    if stride == 1:
        return slim.conv2d(inputs, num_outputs, kernel_size, stride=1, rate=rate, padding="SAME",
                           scope=scope)
    kernel_size_effective = kernel_size + (kernel_size - 1) * (rate - 1)
    pad_total = kernel_size_effective - 1
    pad_beg = pad_total // 2
    pad_end = pad_total - pad_beg
    inputs = jnp.pad(inputs, [[0, 0], [pad_beg, pad_end], [pad_beg, pad_end], [0, 0]])
    return slim.conv2d(inputs, num_outputs, kernel_size, stride=stride, rate=rate,
                       padding="VALID", scope=scope)


@slim.add_arg_scope
def stack_blocks_dense(net, blocks, output_stride=None, outputs_collections=None):
    current_stride = 1
    rate = 1  # the atrous rate, once the output stride is reached
    for block in blocks:
        with sp.scope(block.scope, default_name="block") as sc:
            for i, unit in enumerate(block.args):
                if output_stride is not None and current_stride > output_stride:
                    raise ValueError("The target output_stride cannot be reached.")
                with sp.scope("unit_%d" % (i + 1)):
                    if output_stride is not None and current_stride == output_stride:
                        net = block.unit_fn(net, rate=rate, **dict(unit, stride=1))
                        rate *= unit.get("stride", 1)
                    else:
                        net = block.unit_fn(net, rate=1, **unit)
                        current_stride *= unit.get("stride", 1)
            net = slim.utils.collect_named_outputs(outputs_collections, sc.name, net)
    if output_stride is not None and current_stride != output_stride:
        raise ValueError("The target output_stride cannot be reached.")
    return net


def resnet_arg_scope(weight_decay=0.0001, batch_norm_decay=0.997, batch_norm_epsilon=1e-5,
                     batch_norm_scale=True):
    batch_norm_params = {
        "decay": batch_norm_decay,
        "epsilon": batch_norm_epsilon,
        "scale": batch_norm_scale,
    }
    with slim.arg_scope(
            [slim.conv2d],
            weights_regularizer=slim.l2_regularizer(weight_decay),
            weights_initializer=slim.variance_scaling_initializer(),
            activation_fn=jax.nn.relu,
            normalizer_fn=slim.batch_norm,
            normalizer_params=batch_norm_params):
        with slim.arg_scope([slim.batch_norm], **batch_norm_params):
            with slim.arg_scope([slim.max_pool2d], padding="SAME") as arg_sc:
                return arg_sc


# --- resnet_v1.py ---------------------------------------------------------------------------------


@slim.add_arg_scope
def bottleneck(inputs, depth, depth_bottleneck, stride, rate=1, outputs_collections=None,
               scope=None):
    with sp.scope(scope, default_name="bottleneck_v1") as sc:
        depth_in = inputs.shape[-1]
        if depth == depth_in:
            shortcut = subsample(inputs, stride, "shortcut")
        else:
            shortcut = slim.conv2d(inputs, depth, [1, 1], stride=stride, activation_fn=None,
                                   scope="shortcut")
        residual = slim.conv2d(inputs, depth_bottleneck, [1, 1], stride=1, scope="conv1")
        residual = conv2d_same(residual, depth_bottleneck, 3, stride, rate=rate, scope="conv2")
        residual = slim.conv2d(residual, depth, [1, 1], stride=1, activation_fn=None,
                               scope="conv3")
        output = jax.nn.relu(shortcut + residual)
        return slim.utils.collect_named_outputs(outputs_collections, sc.name, output)


def resnet_v1(inputs, blocks, num_classes=None, is_training=True, global_pool=True,
              output_stride=None, include_root_block=True, reuse=None, scope=None):
    with sp.scope(scope, default_name="resnet_v1", reuse=reuse) as sc:
        end_points_collection = sc.original_name_scope + "_end_points"
        with slim.arg_scope([slim.conv2d, bottleneck, stack_blocks_dense],
                            outputs_collections=end_points_collection):
            with slim.arg_scope([slim.batch_norm], is_training=is_training):
                net = inputs
                if include_root_block:
                    if output_stride is not None:
                        if output_stride % 4 != 0:
                            raise ValueError("The output_stride needs to be a multiple of 4.")
                        output_stride /= 4
                    net = conv2d_same(net, 64, 7, stride=2, scope="conv1")
                    net = slim.max_pool2d(net, [3, 3], stride=2, scope="pool1")
                net = stack_blocks_dense(net, blocks, output_stride)
                if global_pool:
                    net = jnp.mean(net, axis=(1, 2), keepdims=True)  # pool5
                if num_classes is not None:
                    net = slim.conv2d(net, num_classes, [1, 1], activation_fn=None,
                                      normalizer_fn=None, scope="logits")
                end_points = slim.utils.convert_collection_to_dict(end_points_collection)
                if num_classes is not None:
                    end_points["predictions"] = slim.softmax(net, scope="predictions")
                return net, end_points


def resnet_v1_block(scope, base_depth, num_units, stride):
    return Block(scope, bottleneck, [{
        "depth": base_depth * 4,
        "depth_bottleneck": base_depth,
        "stride": 1,
    }] * (num_units - 1) + [{
        "depth": base_depth * 4,
        "depth_bottleneck": base_depth,
        "stride": stride,
    }])


def _resnet(units, default_scope):
    def net(inputs, num_classes=None, is_training=True, global_pool=True, output_stride=None,
            reuse=None, scope=default_scope):
        blocks = [
            resnet_v1_block("block1", base_depth=64, num_units=units[0], stride=2),
            resnet_v1_block("block2", base_depth=128, num_units=units[1], stride=2),
            resnet_v1_block("block3", base_depth=256, num_units=units[2], stride=2),
            resnet_v1_block("block4", base_depth=512, num_units=units[3], stride=1),
        ]
        return resnet_v1(inputs, blocks, num_classes, is_training, global_pool, output_stride,
                         include_root_block=True, reuse=reuse, scope=scope)
    net.__name__ = default_scope
    return net


resnet_v1_50 = _resnet((3, 4, 6, 3), "resnet_v1_50")
resnet_v1_101 = _resnet((3, 4, 23, 3), "resnet_v1_101")
resnet_v1_152 = _resnet((3, 8, 36, 3), "resnet_v1_152")
resnet_v1_200 = _resnet((3, 24, 36, 3), "resnet_v1_200")


def classifier(images, num_classes=1000):
    """Evaluation: slim's ``resnet_arg_scope`` around ``resnet_v1_50``, logits as [batch, classes]."""
    with slim.arg_scope(resnet_arg_scope()):
        logits, end_points = resnet_v1_50(images, num_classes, is_training=False)
    return jnp.squeeze(logits, (1, 2)), end_points


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a TF checkpoint of slim's resnet_v1_50")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args(argv)
    model = sp.transform_with_state(classifier)
    images = jnp.zeros((1, args.size, args.size, 3))
    if args.checkpoint:
        loaded = sp.flatten(sp.checkpoint.load_tf1(args.checkpoint))
        param_specs, state_specs = model.specs(images)
        params = sp.unflatten({k: loaded[k] for k in sp.flatten(param_specs)})
        state = sp.unflatten({k: loaded[k] for k in sp.flatten(state_specs)})
    else:
        params, state = model.init(jax.random.key(0), images)
    flat = sp.flatten(params)
    print(f"resnet_v1_50: {len(flat)} parameters, "
          f"{sum(v.size for v in flat.values()):,} values, "
          f"{len(sp.flatten(state))} batch-norm statistics")
    for name in list(flat)[:3]:
        print(f"  {name} {tuple(flat[name].shape)}")
    # A test pattern, VGG-preprocessed: a horizontal ramp in each channel, minus the channel means.
    ramp = np.linspace(0, 255, args.size, dtype=np.float32)
    pattern = np.broadcast_to(ramp[None, None, :, None], images.shape) - np.array(
        [123.68, 116.78, 103.94], np.float32)
    start = time.perf_counter()
    (logits, end_points), _ = jax.jit(model.apply)(params, state, jnp.asarray(pattern))
    logits.block_until_ready()
    print(f"forward pass (compile included): {time.perf_counter() - start:.1f} s; "
          f"{len(end_points)} end points, e.g. "
          + ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(end_points.items())[-3:]))
    top = np.argsort(-np.asarray(logits[0]))[:5]
    print("top-5 classes:", ", ".join(f"{i} ({float(end_points['predictions'][0, 0, 0, i]):.3f})"
                                      for i in top))


if __name__ == "__main__":
    main()
