//! Model profiles: exact parameter totals, tensor layouts, name lookup, synthetic models.

use netstorm_controlplane::models::{self, ModelProfile, Tensor, UnknownModel, MODEL_NAMES};

fn model(name: &str) -> ModelProfile {
    ModelProfile::by_name(name).expect("built-in model")
}

fn names(p: &ModelProfile) -> Vec<&str> {
    p.tensors.iter().map(|t| t.name.as_str()).collect()
}

fn elements(p: &ModelProfile, name: &str) -> u64 {
    p.tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{} has no tensor {name}", p.name))
        .elements
}

#[test]
fn totals_match_reference_counts_exactly() {
    assert_eq!(model("alexnet").total_elements(), 61_100_840);
    assert_eq!(model("resnet50").total_elements(), 25_557_032);
    // Keras MobileNet(alpha=1.0, 224) trainable parameters (BN gamma/beta included,
    // moving mean/variance excluded).
    assert_eq!(model("mobilenet").total_elements(), 4_231_976);
    assert_eq!(model("vgg16").total_elements(), 138_357_544);
}

#[test]
fn bytes_are_four_per_element() {
    for p in models::all() {
        assert_eq!(p.bytes_f32(), 4 * p.total_elements(), "{}", p.name);
    }
    assert_eq!(model("resnet50").bytes_f32(), 102_228_128);
}

#[test]
fn tensor_counts() {
    assert_eq!(model("alexnet").tensors.len(), 16);
    assert_eq!(model("resnet50").tensors.len(), 161);
    assert_eq!(model("mobilenet").tensors.len(), 83);
    assert_eq!(model("vgg16").tensors.len(), 32);
}

#[test]
fn resnet50_is_in_torchvision_parameter_order() {
    let p = model("resnet50");
    let n = names(&p);
    assert_eq!(
        &n[..15],
        [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "layer1.0.conv1.weight",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "layer1.0.conv2.weight",
            "layer1.0.bn2.weight",
            "layer1.0.bn2.bias",
            "layer1.0.conv3.weight",
            "layer1.0.bn3.weight",
            "layer1.0.bn3.bias",
            "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.weight",
            "layer1.0.downsample.1.bias",
        ]
    );
    assert_eq!(n[15], "layer1.1.conv1.weight");
    assert_eq!(
        &n[n.len() - 5..],
        [
            "layer4.2.conv3.weight",
            "layer4.2.bn3.weight",
            "layer4.2.bn3.bias",
            "fc.weight",
            "fc.bias",
        ]
    );
    // Every tensor name is unique.
    let mut sorted = n.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), n.len());
    // Exactly one projection shortcut per stage.
    assert_eq!(n.iter().filter(|s| s.contains("downsample")).count(), 4 * 3);

    // Shapes at a few landmarks.
    assert_eq!(elements(&p, "conv1.weight"), 7 * 7 * 3 * 64);
    assert_eq!(elements(&p, "bn1.bias"), 64);
    assert_eq!(elements(&p, "layer2.0.conv2.weight"), 3 * 3 * 128 * 128);
    assert_eq!(elements(&p, "layer3.0.downsample.0.weight"), 512 * 1024);
    assert_eq!(elements(&p, "layer4.2.bn3.weight"), 2048);
    assert_eq!(elements(&p, "fc.weight"), 2048 * 1000);
    assert_eq!(elements(&p, "fc.bias"), 1000);
}

#[test]
fn alexnet_vgg16_and_mobilenet_layouts() {
    let a = model("alexnet");
    assert_eq!(names(&a)[0], "features.0.weight");
    assert_eq!(elements(&a, "features.0.weight"), 11 * 11 * 3 * 64);
    assert_eq!(elements(&a, "classifier.1.weight"), 256 * 6 * 6 * 4096);
    assert_eq!(names(&a).last(), Some(&"classifier.6.bias"));

    let v = model("vgg16");
    assert_eq!(elements(&v, "features.28.weight"), 3 * 3 * 512 * 512);
    assert_eq!(elements(&v, "classifier.0.weight"), 512 * 7 * 7 * 4096);
    assert_eq!(names(&v).last(), Some(&"classifier.6.bias"));

    let m = model("mobilenet");
    assert_eq!(
        &names(&m)[..3],
        ["conv1/kernel", "conv1_bn/gamma", "conv1_bn/beta"]
    );
    assert_eq!(elements(&m, "conv_dw_13/depthwise_kernel"), 3 * 3 * 1024);
    assert_eq!(elements(&m, "conv_pw_13/kernel"), 1024 * 1024);
    assert_eq!(names(&m).last(), Some(&"conv_preds/bias"));

    // Weight precedes bias (torchvision) / gamma precedes beta (Keras) everywhere.
    for p in models::all() {
        let n = names(&p);
        for pair in n.windows(2) {
            if let Some(stem) = pair[1].strip_suffix(".bias") {
                assert_eq!(pair[0], format!("{stem}.weight"), "{}", p.name);
            }
            if let Some(stem) = pair[1].strip_suffix("/beta") {
                assert_eq!(pair[0], format!("{stem}/gamma"), "{}", p.name);
            }
        }
        assert!(p.tensors.iter().all(|t| t.elements > 0), "{}", p.name);
    }
}

#[test]
fn lookup_is_case_insensitive_and_accepts_aliases() {
    for (alias, canonical) in [
        ("alexnet", "alexnet"),
        ("AlexNet", "alexnet"),
        ("resnet50", "resnet50"),
        ("ResNet-50", "resnet50"),
        ("RESNET-50", "resnet50"),
        ("mobilenet", "mobilenet"),
        ("MobileNet-v1", "mobilenet"),
        ("vgg16", "vgg16"),
        ("VGG-16", "vgg16"),
    ] {
        assert_eq!(model(alias).name, canonical, "{alias}");
    }
}

#[test]
fn all_and_model_names_agree() {
    let all = models::all();
    let all_names: Vec<&str> = all.iter().map(|p| p.name).collect();
    assert_eq!(all_names, MODEL_NAMES);
    for name in MODEL_NAMES {
        assert_eq!(model(name).name, *name);
    }
}

#[test]
fn unknown_model_error_lists_known_names() {
    let err: UnknownModel = ModelProfile::by_name("resnet-152").unwrap_err();
    assert_eq!(err.name, "resnet-152");
    let msg = err.to_string();
    assert!(msg.contains("resnet-152"), "{msg}");
    for name in MODEL_NAMES {
        assert!(msg.contains(name), "{msg} should list {name}");
    }
    assert!(ModelProfile::by_name("").is_err());
}

#[test]
fn synthetic_model_has_one_tensor_of_the_requested_size() {
    let p = ModelProfile::synthetic(100.0);
    assert_eq!(
        p.tensors,
        vec![Tensor {
            name: "synthetic-100MB".to_owned(),
            elements: 25_000_000,
        }]
    );
    assert_eq!(p.total_elements(), 25_000_000);
    assert_eq!(p.bytes_f32(), 100_000_000);

    let half = ModelProfile::synthetic(0.5);
    assert_eq!(half.tensors[0].name, "synthetic-0.5MB");
    assert_eq!(half.bytes_f32(), 500_000);

    assert_eq!(ModelProfile::synthetic(0.0).total_elements(), 0);
    assert_eq!(ModelProfile::synthetic(-3.0).total_elements(), 0);
}
