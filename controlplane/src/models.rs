//! Per-tensor parameter counts of the DNNs the NetStorm paper trains (AlexNet, ResNet-50,
//! MobileNet v1, VGG-16), plus synthetic single-tensor models of any size.
//!
//! A synchronization round moves one gradient per learnable parameter, so these counts
//! (times 4 bytes of f32) are the traffic per round, and the tensor boundaries are where a
//! framework hands gradients to the communication layer.
//!
//! Every profile is **derived from the architecture** (layer configuration tables and
//! loops computing `k_h * k_w * c_in * c_out` etc.), not pasted, and lists tensors in the
//! order the reference framework enumerates parameters: each layer's weight then bias;
//! batch-norm scale (gamma) then shift (beta). Only learnable parameters are counted:
//! batch-norm running mean/variance are buffers that are never synchronized.
//!
//! Built-in profiles (name, variant derived, total parameters, parameter tensors):
//!
//! * `alexnet` — torchvision `alexnet`: the single-GPU ("one weird trick") variant with
//!   64-192-384-256-256 conv filters and biases everywhere, not the original two-GPU
//!   grouped network. 61,100,840 parameters, 16 tensors.
//! * `resnet50` — torchvision `resnet50`: convs without bias, BN gamma/beta, fc weight and
//!   bias. torchvision strides the 3x3 conv of a bottleneck ("v1.5") where the original
//!   v1 strides the first 1x1; the parameter count is the same. 25,557,032 parameters,
//!   161 tensors.
//! * `mobilenet` — Keras `MobileNet(alpha=1.0, input 224, include_top)`: trainable
//!   parameters, i.e. convs without bias, BN gamma/beta, and the 1x1 `conv_preds`
//!   classifier with bias. Our derivation gives exactly the Keras reference count of
//!   4,231,976 trainable parameters (Keras' 4,253,864 total adds the 21,888 BN moving
//!   means/variances). 83 tensors.
//! * `vgg16` — torchvision `vgg16` (configuration "D", no batch norm). 138,357,544
//!   parameters, 32 tensors.
//!
//! Tensor names follow the reference framework (`layer1.0.conv1.weight` for torchvision,
//! `conv_dw_1_bn/gamma` for Keras), so they can be matched against real checkpoints. In
//! torchvision a batch-norm's `weight` is gamma and its `bias` is beta.

use serde::Serialize;

/// One learnable parameter tensor (and hence one gradient tensor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tensor {
    /// Parameter name as the reference framework spells it.
    pub name: String,
    /// Number of f32 elements.
    pub elements: u64,
}

/// The gradient layout of one model: its parameter tensors in framework order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelProfile {
    /// Canonical (lower-case) model name, one of [`MODEL_NAMES`] or `"synthetic"`.
    pub name: &'static str,
    /// Learnable parameter tensors, in the order the framework lists them.
    pub tensors: Vec<Tensor>,
}

/// Canonical names of the built-in models, in the order [`all`] returns them.
pub const MODEL_NAMES: &[&str] = &["alexnet", "resnet50", "mobilenet", "vgg16"];

/// Name of the profiles built by [`ModelProfile::synthetic`].
pub const SYNTHETIC_NAME: &str = "synthetic";

/// Bytes per gradient element (f32 on the wire).
const F32_BYTES: u64 = 4;

/// A model name that [`ModelProfile::by_name`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {name:?}; known models: {}", MODEL_NAMES.join(", "))]
pub struct UnknownModel {
    /// The name that was asked for, as given.
    pub name: String,
}

impl ModelProfile {
    /// Total number of learnable parameters (= gradient elements per round).
    pub fn total_elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.elements).sum()
    }

    /// Gradient bytes per round as f32 (`4 * total_elements()`).
    pub fn bytes_f32(&self) -> u64 {
        self.total_elements() * F32_BYTES
    }

    /// Looks a built-in model up by name, case-insensitively, ignoring `-` and `_`:
    /// `alexnet`; `resnet50` / `resnet-50`; `mobilenet` / `mobilenet-v1`; `vgg16` / `vgg-16`.
    ///
    /// # Errors
    /// [`UnknownModel`] (whose message lists [`MODEL_NAMES`]) for any other name.
    pub fn by_name(name: &str) -> Result<ModelProfile, UnknownModel> {
        let key: String = name
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match key.as_str() {
            "alexnet" => Ok(alexnet()),
            "resnet50" | "resnet50v1" => Ok(resnet50()),
            "mobilenet" | "mobilenetv1" => Ok(mobilenet_v1()),
            "vgg16" => Ok(vgg16()),
            _ => Err(UnknownModel {
                name: name.to_owned(),
            }),
        }
    }

    /// A model of `model_mb` megabytes (10^6 bytes) of f32 gradients in one tensor of
    /// `round(model_mb * 1e6 / 4)` elements, named `synthetic-<model_mb>MB` (e.g.
    /// `synthetic-100MB`, `synthetic-0.5MB`). The profile's name is [`SYNTHETIC_NAME`].
    ///
    /// Negative or NaN sizes give an empty tensor (0 elements).
    pub fn synthetic(model_mb: f64) -> ModelProfile {
        // `as` saturates: NaN and negatives become 0, huge values u64::MAX.
        let elements = (model_mb * 1e6 / F32_BYTES as f64).round() as u64;
        ModelProfile {
            name: SYNTHETIC_NAME,
            tensors: vec![Tensor {
                name: format!("synthetic-{model_mb}MB"),
                elements,
            }],
        }
    }
}

/// All built-in models, in [`MODEL_NAMES`] order.
pub fn all() -> Vec<ModelProfile> {
    vec![alexnet(), resnet50(), mobilenet_v1(), vgg16()]
}

/// Accumulates tensors layer by layer, in framework order.
#[derive(Debug, Default)]
struct Layers {
    tensors: Vec<Tensor>,
}

impl Layers {
    fn push(&mut self, name: String, elements: u64) {
        self.tensors.push(Tensor { name, elements });
    }

    /// torchvision `Conv2d(c_in, c_out, k)`: `weight` `[c_out, c_in, k, k]`, optional `bias`.
    fn torch_conv(&mut self, prefix: &str, k: u64, c_in: u64, c_out: u64, bias: bool) {
        self.push(format!("{prefix}.weight"), k * k * c_in * c_out);
        if bias {
            self.push(format!("{prefix}.bias"), c_out);
        }
    }

    /// torchvision `BatchNorm2d(c)`: `weight` (gamma) and `bias` (beta); running stats are
    /// buffers, not parameters.
    fn torch_bn(&mut self, prefix: &str, c: u64) {
        self.push(format!("{prefix}.weight"), c);
        self.push(format!("{prefix}.bias"), c);
    }

    /// torchvision `Linear(n_in, n_out)`: `weight` `[n_out, n_in]`, `bias` `[n_out]`.
    fn torch_linear(&mut self, prefix: &str, n_in: u64, n_out: u64) {
        self.push(format!("{prefix}.weight"), n_in * n_out);
        self.push(format!("{prefix}.bias"), n_out);
    }

    /// Keras `Conv2D` without bias: `kernel` `[k, k, c_in, c_out]`.
    fn keras_conv(&mut self, name: &str, k: u64, c_in: u64, c_out: u64) {
        self.push(format!("{name}/kernel"), k * k * c_in * c_out);
    }

    /// Keras `DepthwiseConv2D` (multiplier 1) without bias: `depthwise_kernel` `[k, k, c, 1]`.
    fn keras_depthwise(&mut self, name: &str, k: u64, c: u64) {
        self.push(format!("{name}/depthwise_kernel"), k * k * c);
    }

    /// Keras `BatchNormalization`: trainable `gamma` and `beta` (moving mean/variance are
    /// non-trainable and excluded).
    fn keras_bn(&mut self, name: &str, c: u64) {
        self.push(format!("{name}/gamma"), c);
        self.push(format!("{name}/beta"), c);
    }

    fn finish(self, name: &'static str) -> ModelProfile {
        ModelProfile {
            name,
            tensors: self.tensors,
        }
    }
}

/// Number of ImageNet classes every built-in classifier outputs.
const IMAGENET_CLASSES: u64 = 1000;

/// torchvision AlexNet: 5 convs with bias, adaptive avg-pool to 6x6, 3 fully connected.
fn alexnet() -> ModelProfile {
    // (index in `features`, kernel, c_out); input has 3 channels.
    const CONVS: [(usize, u64, u64); 5] = [
        (0, 11, 64),
        (3, 5, 192),
        (6, 3, 384),
        (8, 3, 256),
        (10, 3, 256),
    ];
    const POOLED_SIDE: u64 = 6;
    const HIDDEN: u64 = 4096;

    let mut l = Layers::default();
    let mut c_in = 3;
    for (index, k, c_out) in CONVS {
        l.torch_conv(&format!("features.{index}"), k, c_in, c_out, true);
        c_in = c_out;
    }
    let flat = c_in * POOLED_SIDE * POOLED_SIDE;
    // classifier = [Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear].
    l.torch_linear("classifier.1", flat, HIDDEN);
    l.torch_linear("classifier.4", HIDDEN, HIDDEN);
    l.torch_linear("classifier.6", HIDDEN, IMAGENET_CLASSES);
    l.finish("alexnet")
}

/// torchvision ResNet-50: stem conv 7x7 + BN, four stages of bottleneck blocks
/// ([3, 4, 6, 3] blocks, widths 64/128/256/512, expansion 4; the first block of each stage
/// has a 1x1 conv + BN projection shortcut), global avg-pool, fc.
fn resnet50() -> ModelProfile {
    const STEM_WIDTH: u64 = 64;
    const EXPANSION: u64 = 4;
    // (blocks, bottleneck width) per stage.
    const STAGES: [(usize, u64); 4] = [(3, 64), (4, 128), (6, 256), (3, 512)];

    let mut l = Layers::default();
    l.torch_conv("conv1", 7, 3, STEM_WIDTH, false);
    l.torch_bn("bn1", STEM_WIDTH);
    let mut c_in = STEM_WIDTH;
    for (stage, (blocks, width)) in STAGES.into_iter().enumerate() {
        let c_out = width * EXPANSION;
        for block in 0..blocks {
            let p = format!("layer{}.{block}", stage + 1);
            l.torch_conv(&format!("{p}.conv1"), 1, c_in, width, false);
            l.torch_bn(&format!("{p}.bn1"), width);
            l.torch_conv(&format!("{p}.conv2"), 3, width, width, false);
            l.torch_bn(&format!("{p}.bn2"), width);
            l.torch_conv(&format!("{p}.conv3"), 1, width, c_out, false);
            l.torch_bn(&format!("{p}.bn3"), c_out);
            if block == 0 {
                // Projection shortcut: channel count (and, after stage 1, stride) changes.
                l.torch_conv(&format!("{p}.downsample.0"), 1, c_in, c_out, false);
                l.torch_bn(&format!("{p}.downsample.1"), c_out);
            }
            c_in = c_out;
        }
    }
    l.torch_linear("fc", c_in, IMAGENET_CLASSES);
    l.finish("resnet50")
}

/// Keras MobileNet v1, alpha 1.0, 224x224, with top: stem 3x3 conv + BN, 13 depthwise
/// separable blocks (3x3 depthwise + BN, 1x1 pointwise + BN; convs without bias), global
/// avg-pool, and the 1x1 `conv_preds` classifier (with bias).
fn mobilenet_v1() -> ModelProfile {
    const STEM_WIDTH: u64 = 32;
    /// Pointwise output channels of blocks 1..=13 (strides do not change parameter counts).
    const BLOCK_WIDTHS: [u64; 13] = [
        64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024,
    ];

    let mut l = Layers::default();
    l.keras_conv("conv1", 3, 3, STEM_WIDTH);
    l.keras_bn("conv1_bn", STEM_WIDTH);
    let mut c_in = STEM_WIDTH;
    for (i, c_out) in BLOCK_WIDTHS.into_iter().enumerate() {
        let id = i + 1;
        l.keras_depthwise(&format!("conv_dw_{id}"), 3, c_in);
        l.keras_bn(&format!("conv_dw_{id}_bn"), c_in);
        l.keras_conv(&format!("conv_pw_{id}"), 1, c_in, c_out);
        l.keras_bn(&format!("conv_pw_{id}_bn"), c_out);
        c_in = c_out;
    }
    l.push("conv_preds/kernel".to_owned(), c_in * IMAGENET_CLASSES);
    l.push("conv_preds/bias".to_owned(), IMAGENET_CLASSES);
    l.finish("mobilenet")
}

/// torchvision VGG-16 (configuration "D", no batch norm): 13 3x3 convs with bias in five
/// max-pooled groups, adaptive avg-pool to 7x7, 3 fully connected.
fn vgg16() -> ModelProfile {
    /// Output channels per conv; `None` is a max-pool (it occupies a `features` index).
    const CFG: [Option<u64>; 18] = [
        Some(64),
        Some(64),
        None,
        Some(128),
        Some(128),
        None,
        Some(256),
        Some(256),
        Some(256),
        None,
        Some(512),
        Some(512),
        Some(512),
        None,
        Some(512),
        Some(512),
        Some(512),
        None,
    ];
    const POOLED_SIDE: u64 = 7;
    const HIDDEN: u64 = 4096;

    let mut l = Layers::default();
    let mut c_in = 3;
    let mut index = 0; // position in torchvision's `features` Sequential
    for entry in CFG {
        match entry {
            Some(c_out) => {
                l.torch_conv(&format!("features.{index}"), 3, c_in, c_out, true);
                c_in = c_out;
                index += 2; // Conv2d, ReLU
            }
            None => index += 1, // MaxPool2d
        }
    }
    let flat = c_in * POOLED_SIDE * POOLED_SIDE;
    // classifier = [Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear].
    l.torch_linear("classifier.0", flat, HIDDEN);
    l.torch_linear("classifier.3", HIDDEN, HIDDEN);
    l.torch_linear("classifier.6", HIDDEN, IMAGENET_CLASSES);
    l.finish("vgg16")
}
